#!/usr/bin/env bash
# Uploads what a worker instance needs to S3: the release binary (built for
# the instances' architecture) and the model directory. Used by bake.sh, and
# by instances booted from a stock AMI (workers.artifacts in the config).
#
# Usage: worker/ami/upload-artifacts.sh s3://BUCKET/PREFIX [BINARY]
#   BINARY defaults to what scripts/build-worker builds (x86_64, glibc
#   2.34, for Amazon Linux 2023); a plain `cargo build --release` on a
#   newer distribution needs a newer glibc than AL2023 has.
set -euo pipefail
artifacts="${1:?usage: upload-artifacts.sh s3://BUCKET/PREFIX [BINARY]}"
artifacts="${artifacts%/}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
binary="${2:-$("$repo/scripts/build-worker")}"
[[ -x "$binary" ]] || { echo "no binary at $binary (scripts/build-worker)" >&2; exit 1; }
aws s3 cp "$binary" "$artifacts/imagefleet"
aws s3 sync "$repo/models/" "$artifacts/models/" --exclude '*' \
    --include '*.onnx' --include '*.txt' --include '*.toml'
echo "uploaded to $artifacts" >&2
