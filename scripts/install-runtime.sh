#!/usr/bin/env bash
# Installs ONNX Runtime (libonnxruntime.so 1.32.0, from the pinned PyPI `onnxruntime` wheel)
# into $AKIDB_HOME/runtime (default .akidb/runtime), verified against
# scripts/SHA256SUMS.installed. Used by scripts/setup.sh and by the Dockerfile (through
# scripts/image/fetch.sh), so the image gets the very same, checksummed library.
# Idempotent: an intact installed library is kept. Needs python3 with pip.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/pinned.sh"

home="${AKIDB_HOME:-$pinned_root/.akidb}"
if verify_installed "$home" runtime/; then
  echo "install-runtime: ONNX Runtime already installed in $home/runtime"
  exit 0
fi
downloads="$home/downloads"
download_wheels "$downloads" onnxruntime
mkdir -p "$home/runtime"
python3 - "$downloads" "$home/runtime" <<'PY'
import glob, os, sys, zipfile
downloads, runtime = sys.argv[1:3]
found = sorted(glob.glob(os.path.join(downloads, "onnxruntime-*.whl")))
if not found:
    sys.exit(f"install-runtime: no onnxruntime wheel in {downloads}")
member = "onnxruntime/capi/libonnxruntime.so.1.32.0"
dest = os.path.join(runtime, "libonnxruntime.so.1.32.0")
with zipfile.ZipFile(found[-1]) as wheel, wheel.open(member) as src, open(dest + ".part", "wb") as out:
    while chunk := src.read(1 << 20):
        out.write(chunk)
os.replace(dest + ".part", dest)
link = os.path.join(runtime, "libonnxruntime.so")
if os.path.lexists(link):
    os.remove(link)
os.symlink("libonnxruntime.so.1.32.0", link)
PY
verify_installed_loudly "$home" runtime/
echo "install-runtime: installed ONNX Runtime in $home/runtime"
