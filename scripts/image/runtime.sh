#!/usr/bin/env bash
# The image's runtime stage (Dockerfile `runtime`), run after the executable and ONNX Runtime
# are copied in: creates the model mount point ROOT/models owned by the service's user
# (65532, so a fresh named volume is writable by it), and checks that the executable and
# libonnxruntime.so find every shared library they need on this system (a slim base image
# that lacks one fails here, at build time, not at the first start).
#   bash scripts/image/runtime.sh ROOT
# CI runs it inside the image build (scripts/image-check.sh, scripts/image/build-image.sh).
set -euo pipefail
root="${1:?usage: runtime.sh ROOT}"
uid=65532
install -d -m 0755 -o "$uid" -g "$uid" "$root/models"
missing=0
for file in "$root/usr/local/bin/akidb-rest" "$root/opt/akidb/runtime/libonnxruntime.so"; do
  [ -e "$file" ] || { echo "image/runtime: $file is missing" >&2; exit 1; }
  if ldd "$file" | grep -q "not found"; then
    echo "image/runtime: $file needs libraries this system lacks:" >&2
    ldd "$file" | grep "not found" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
echo "image/runtime: executable and ONNX Runtime resolve all their libraries"
