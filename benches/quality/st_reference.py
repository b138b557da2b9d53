#!/usr/bin/env python3
"""Reference vectors for benches/quality/eval_texts.json from sentence-transformers (PyTorch, fp32).

Usage: st_reference.py ST_CHECKPOINT_DIR [OUT.json]   (run with the venv that
../shared/tools/embeddinggemma/build.sh makes). Writes {"model", "items": {id: {"tokens", "embedding"}}},
the format of ../shared/reference/*.st.json.
"""
import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer


def main():
    ckpt = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "eval_reference.st.json")
    torch.set_num_threads(2)
    model = SentenceTransformer(ckpt, device="cpu")
    texts = json.load(open(os.path.join(here, "eval_texts.json"), encoding="utf-8"))
    items = {}
    for t in texts:
        prompt = t.get("prompt_name")
        emb = model.encode([t["text"]], prompt_name=prompt, normalize_embeddings=True, convert_to_numpy=True)[0]
        full = (model.prompts.get(prompt, "") if prompt else "") + t["text"]
        tokens = len(model.tokenizer(full, truncation=True, max_length=model.max_seq_length)["input_ids"])
        items[t["id"]] = {"tokens": tokens, "embedding": [float(x) for x in emb]}
    json.dump({"model": "embeddinggemma-300m", "cap": model.max_seq_length, "pooling": "sentence-transformers", "items": items}, open(out, "w"))
    print(f"wrote {len(items)} vectors to {out}")


if __name__ == "__main__":
    main()
