#!/usr/bin/env bash
# Fills the placeholders of a policy document in this directory.
# Usage: worker/ami/iam/render.sh POLICY.json FLEET [ARTIFACTS_URI]
#   Region and account come from the AWS CLI's configuration; the AMI,
#   subnet and security group from IMAGEFLEET_WORKER_IMAGE_ID,
#   IMAGEFLEET_WORKER_SUBNET and the first of IMAGEFLEET_WORKER_SECURITY_GROUPS.
set -euo pipefail
policy="${1:?usage: render.sh POLICY.json FLEET [s3://BUCKET/PREFIX]}"
fleet="${2:?fleet name}"
artifacts="${3:-s3://none/none}"
artifacts="${artifacts#s3://}"
sg="${IMAGEFLEET_WORKER_SECURITY_GROUPS:-*}"
sg="${sg%%,*}"
region="${AWS_REGION:-$(aws configure get region)}"
account="$(aws sts get-caller-identity --query Account --output text)"
sed -e "s/REGION/$region/g" -e "s/ACCOUNT/$account/g" -e "s/FLEET/$fleet/g" \
    -e "s#ARTIFACTS_BUCKET#${artifacts%%/*}#g" -e "s#ARTIFACTS_PREFIX#${artifacts#*/}#g" \
    -e "s/WORKER_AMI/${IMAGEFLEET_WORKER_IMAGE_ID:-*}/g" \
    -e "s/SUBNET/${IMAGEFLEET_WORKER_SUBNET:-*}/g" \
    -e "s/SECURITY_GROUP/$sg/g" \
    "$(dirname "$0")/$policy"
