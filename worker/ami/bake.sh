#!/usr/bin/env bash
# Bakes an imagefleet worker AMI on Amazon Linux 2023 with the AWS CLI:
# boots a stock AL2023 instance whose user data installs the binary, the
# model and the systemd unit from S3, waits until it has stopped itself,
# snapshots it as an AMI, and terminates it. Prints the AMI id.
#
# Usage: worker/ami/bake.sh s3://BUCKET/PREFIX
#   (upload first: worker/ami/upload-artifacts.sh s3://BUCKET/PREFIX)
# Environment: the standard AWS variables; optional
#   BAKE_INSTANCE_TYPE (default c7i.large; must match the binary's arch),
#   BAKE_ARCH (x86_64 or arm64, default x86_64, as scripts/build-worker),
#   BAKE_INSTANCE_PROFILE (a profile that can read the artifacts;
#     the worker profile from worker/ami/iam/ does),
#   BAKE_SUBNET, BAKE_SECURITY_GROUP.
set -euo pipefail

artifacts="${1:?usage: bake.sh s3://BUCKET/PREFIX}"
artifacts="${artifacts%/}"
arch="${BAKE_ARCH:-x86_64}"
instance_type="${BAKE_INSTANCE_TYPE:-c7i.large}"
here="$(cd "$(dirname "$0")" && pwd)"

# The current AL2023 image, from AWS's public parameter (no hard-coded id).
base_ami="$(aws ssm get-parameter \
    --name "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-$arch" \
    --query Parameter.Value --output text)"
echo "bake: base image $base_ami ($arch)" >&2

user_data="$(mktemp)"
trap 'rm -f "$user_data"' EXIT
{
    echo '#!/bin/bash'
    echo 'set -euxo pipefail'
    echo "aws s3 cp '$artifacts/imagefleet' /usr/local/bin/imagefleet"
    echo 'chmod 0755 /usr/local/bin/imagefleet'
    echo 'mkdir -p /opt/imagefleet/models /etc/imagefleet'
    echo "aws s3 sync '$artifacts/models/' /opt/imagefleet/models/"
    echo "cat > /etc/systemd/system/imagefleet-worker.service <<'UNIT'"
    cat "$here/imagefleet-worker.service"
    echo 'UNIT'
    # Enabled but not started: the launch's user data writes worker.env,
    # then starts it. Checking the binary runs catches an arch mismatch.
    echo '/usr/local/bin/imagefleet --version'
    echo 'systemctl daemon-reload'
    echo 'cloud-init clean --logs'
    echo 'shutdown -h now'
} >"$user_data"

run_args=(--image-id "$base_ami" --instance-type "$instance_type"
    --user-data "file://$user_data" --instance-initiated-shutdown-behavior stop
    --metadata-options HttpTokens=required,HttpPutResponseHopLimit=1,HttpEndpoint=enabled
    --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=imagefleet-ami-bake}]'
    --query 'Instances[0].InstanceId' --output text)
[[ -n "${BAKE_INSTANCE_PROFILE:-}" ]] && run_args+=(--iam-instance-profile "Name=$BAKE_INSTANCE_PROFILE")
[[ -n "${BAKE_SUBNET:-}" ]] && run_args+=(--subnet-id "$BAKE_SUBNET")
[[ -n "${BAKE_SECURITY_GROUP:-}" ]] && run_args+=(--security-group-ids "$BAKE_SECURITY_GROUP")

instance="$(aws ec2 run-instances "${run_args[@]}")"
echo "bake: builder instance $instance; waiting for it to install and stop" >&2
cleanup() { aws ec2 terminate-instances --instance-ids "$instance" >/dev/null || true; rm -f "$user_data"; }
trap cleanup EXIT
aws ec2 wait instance-stopped --instance-ids "$instance"

name="imagefleet-worker-$(date -u +%Y%m%d-%H%M%S)"
ami="$(aws ec2 create-image --instance-id "$instance" --name "$name" \
    --description "imagefleet worker (binary, model, systemd unit)" \
    --tag-specifications "ResourceType=image,Tags=[{Key=Name,Value=$name}]" \
    --query ImageId --output text)"
echo "bake: creating $ami" >&2
aws ec2 wait image-available --image-ids "$ami"
echo "$ami"
