#!/usr/bin/env bash
# Fills the placeholders of a policy document in this directory, and fails,
# naming it, when a value it needs is not set: a policy rendered with a
# blank or a '*' where a name belongs grants far more than it says.
#
# Usage: worker/ami/iam/render.sh POLICY.json FLEET
#   REGION   AWS_REGION (else the AWS CLI's configured region)
#   ACCOUNT  IMAGEFLEET_ACCOUNT (else `aws sts get-caller-identity`)
#   controller-policy.json also needs
#     WORKER_AMI      IMAGEFLEET_WORKER_IMAGE_ID
#     SUBNET          IMAGEFLEET_WORKER_SUBNETS (or _SUBNET), comma-separated
#     SECURITY_GROUP  IMAGEFLEET_WORKER_SECURITY_GROUPS, comma-separated
#                     (the VPC's default group's id if you use that one)
#     WORKER_ROLE     IMAGEFLEET_WORKER_INSTANCE_PROFILE (a role of the same
#                     name, as docs/aws.md creates it)
#   worker-artifacts-policy.json needs
#     ARTIFACTS_BUCKET/ARTIFACTS_PREFIX  IMAGEFLEET_WORKER_ARTIFACTS=s3://B/P
#   IMAGEFLEET_QUEUE_FIFO=true renders the FIFO queue names.
# Names are the ones derived from the fleet (no wildcards across fleets:
# imagefleet-demo-* would also match fleet demo-2's resources).
set -euo pipefail
policy="${1:?usage: render.sh POLICY.json FLEET}"
fleet="${2:?usage: render.sh POLICY.json FLEET}"
file="$(dirname "$0")/$policy"
[[ -f "$file" ]] || { echo "render.sh: no policy $file" >&2; exit 1; }
[[ "$fleet" =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || {
    echo "render.sh: fleet name $fleet: 1 to 32 lowercase letters, digits and inner '-'" >&2; exit 1; }

uses() { grep -q "$1" "$file"; }
missing() { echo "render.sh: $policy needs $1, but $2 is not set" >&2; exit 1; }

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
if [[ -z "$region" ]] && uses REGION; then
    region="$(aws configure get region 2>/dev/null || true)"
fi
account="${IMAGEFLEET_ACCOUNT:-}"
if [[ -z "$account" ]] && uses ACCOUNT; then
    account="$(aws sts get-caller-identity --query Account --output text 2>/dev/null || true)"
fi
uses REGION && [[ -z "$region" ]] && missing REGION "AWS_REGION"
uses ACCOUNT && [[ -z "$account" ]] && missing ACCOUNT "IMAGEFLEET_ACCOUNT (and aws sts failed)"

ami="${IMAGEFLEET_WORKER_IMAGE_ID:-}"
subnets="${IMAGEFLEET_WORKER_SUBNETS:-${IMAGEFLEET_WORKER_SUBNET:-}}"
groups="${IMAGEFLEET_WORKER_SECURITY_GROUPS:-}"
role="${IMAGEFLEET_WORKER_INSTANCE_PROFILE:-}"
artifacts="${IMAGEFLEET_WORKER_ARTIFACTS:-}"
uses WORKER_AMI && [[ -z "$ami" ]] && missing WORKER_AMI IMAGEFLEET_WORKER_IMAGE_ID
uses SUBNET && [[ -z "${subnets//,/}" ]] && missing SUBNET IMAGEFLEET_WORKER_SUBNETS
uses SECURITY_GROUP && [[ -z "${groups//,/}" ]] && missing SECURITY_GROUP IMAGEFLEET_WORKER_SECURITY_GROUPS
uses WORKER_ROLE && [[ -z "$role" ]] && missing WORKER_ROLE IMAGEFLEET_WORKER_INSTANCE_PROFILE
bucket="" prefix=""
if uses ARTIFACTS_; then
    [[ "$artifacts" =~ ^s3://([a-z0-9][a-z0-9.-]+)/(.+[^/])/?$ ]] ||
        missing "ARTIFACTS_BUCKET and ARTIFACTS_PREFIX" "IMAGEFLEET_WORKER_ARTIFACTS (s3://BUCKET/PREFIX)"
    bucket="${BASH_REMATCH[1]}" prefix="${BASH_REMATCH[2]%/}"
fi
case "${IMAGEFLEET_QUEUE_FIFO:-false}" in
    1|true|yes) suffix=.fifo ;;
    *) suffix="" ;;
esac

# One Resource line per subnet and per security group.
rendered="$(awk -v subnets="$subnets" -v groups="$groups" '
    function each(list, token,    n, parts, i, line) {
        n = split(list, parts, ",")
        for (i = 1; i <= n; i++) {
            if (parts[i] == "") continue
            line = $0; gsub(token, parts[i], line); print line
        }
    }
    /SECURITY_GROUP/ { each(groups, "SECURITY_GROUP"); next }
    /SUBNET/ { each(subnets, "SUBNET"); next }
    { print }' "$file" |
    sed -e "s/REGION/$region/g" -e "s/ACCOUNT/$account/g" \
        -e "s/QUEUE_SUFFIX/$suffix/g" -e "s/WORKER_AMI/$ami/g" \
        -e "s/WORKER_ROLE/$role/g" \
        -e "s#ARTIFACTS_BUCKET#$bucket#g" -e "s#ARTIFACTS_PREFIX#$prefix#g" \
        -e "s/FLEET/$fleet/g")"
# Whatever is still in capitals was not filled in.
if leftover="$(grep -oE '\b(REGION|ACCOUNT|FLEET|QUEUE_SUFFIX|WORKER_AMI|WORKER_ROLE|SUBNET|SECURITY_GROUP|ARTIFACTS_[A-Z]+)\b' <<<"$rendered")"; then
    echo "render.sh: placeholders left in $policy: $(sort -u <<<"$leftover" | tr '\n' ' ')" >&2
    exit 1
fi
printf '%s\n' "$rendered"
