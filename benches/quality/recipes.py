#!/usr/bin/env python3
"""Explores quantisation recipes for EmbeddingGemma with ONNX Runtime's own Python quantiser.

Exploration tool only (the project's quantiser is Rust: `examples/quantize.rs`); it writes the
same `MatMulNBits` bytes, so what is measured here is what the Rust quantiser produces.

  recipes.py quantize SRC_ONNX_DIR OUT_DIR RECIPE_JSON    write OUT_DIR/model.onnx(+_data)
  recipes.py quality MODEL_DIR ONNX_FILE                  worst/mean cosine vs sentence-transformers
                                                          (QUALITY_SETS=shared: the shared sentences only)
  recipes.py speed ONNX_FILE... --tokenizer DIR            interleaved latency of several graphs

RECIPE_JSON: {"bits": 8, "block": 32, "accuracy": 4,
              "overrides": [["regex on node name", block | "fp32"], ...],
              "embed": null | {"bits": 8, "block": 32}}
"""
import json
import os
import re
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared")


def quantize(src_dir, out_dir, recipe):
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    model = onnx.load(os.path.join(src_dir, "model.onnx"))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    overrides = [(re.compile(p), v) for p, v in recipe.get("overrides", [])]
    quantizers = {}
    new_nodes = []
    counts = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            block = recipe.get("block", 32)
            bits = recipe.get("bits", 8)
            for pattern, value in overrides:
                if pattern.search(node.name):
                    if isinstance(value, dict):
                        block, bits = value.get("block", block), value.get("bits", bits)
                    else:
                        block = value
            if block == "fp32":
                counts["fp32"] = counts.get("fp32", 0) + 1
                new_nodes.append(node)
                continue
            key = (bits, block)
            if key not in quantizers:
                quantizers[key] = DefaultWeightOnlyQuantizer(
                    DefaultWeightOnlyQuantConfig(
                        block_size=block, is_symmetric=True, accuracy_level=recipe.get("accuracy", 4), bits=bits
                    )
                )
            counts[f"{bits}b/{block}"] = counts.get(f"{bits}b/{block}", 0) + 1
            new_nodes.extend(quantizers[key].quantize(node, [graph]))
        elif node.op_type == "Gather" and recipe.get("embed") and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            new_nodes.extend(quantize_gather(graph, inits, node, recipe["embed"]))
            counts["gather"] = 1
        else:
            new_nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.startswith("model"):
            os.remove(os.path.join(out_dir, f))
    onnx.save_model(model, os.path.join(out_dir, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=1024)
    print(json.dumps(counts))


def quantize_gather(graph, inits, node, cfg):
    """Token-embedding table -> com.microsoft GatherBlockQuantized, symmetric, blocks along the row."""
    import onnx
    from onnx import numpy_helper

    table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    rows, cols = table.shape
    block = cfg.get("block", 32)
    bits = cfg.get("bits", 8)
    assert bits == 8 and cols % block == 0
    blocks = table.reshape(rows, cols // block, block)
    amax = np.abs(blocks).max(axis=2, keepdims=True)
    scale = (amax / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(blocks / scale), -127, 127).astype(np.int16) + 128
    data = numpy_helper.from_array(q.reshape(rows, cols).astype(np.uint8), node.input[0] + "_Q8")
    scales = numpy_helper.from_array(scale.reshape(rows, cols // block), node.input[0] + "_scales")
    graph.initializer.extend([data, scales])
    return [onnx.helper.make_node(
        "GatherBlockQuantized", [data.name, node.input[1], scales.name], list(node.output), name=node.name + "_Q8",
        domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block, bits=bits)]


def load_tokenizer(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def encode(tok, text, prompt=None, cap=2048):
    ids = tok.encode((PROMPTS[prompt] if prompt else "") + text).ids
    if len(ids) > cap:
        ids = ids[: cap - 1] + [ids[-1]]
    return ids


def session(path, threads=2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run(sess, batch):
    seq = max(len(b) for b in batch)
    ids = np.zeros((len(batch), seq), dtype=np.int64)
    mask = np.zeros((len(batch), seq), dtype=np.int64)
    for i, b in enumerate(batch):
        ids[i, : len(b)] = b
        mask[i, : len(b)] = 1
    return sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]


def quality(model_dir, onnx_file, refs):
    tok = load_tokenizer(model_dir)
    sess = session(onnx_file)
    report = {}
    for ref_path, texts_path in refs:
        ref = json.load(open(ref_path))["items"]
        texts = {t["id"]: t for t in json.load(open(texts_path, encoding="utf-8"))}
        cos = {}
        for key, item in ref.items():
            t = texts[key]
            ids = encode(tok, t["text"], t.get("prompt_name"))
            assert len(ids) == item["tokens"], (key, len(ids), item["tokens"])
            v = run(sess, [ids])[0]
            r = np.asarray(item["embedding"], dtype=np.float32)
            cos[key] = float(np.dot(v, r) / (np.linalg.norm(v) * np.linalg.norm(r)))
        worst = min(cos, key=cos.get)
        report[os.path.basename(ref_path)] = {
            "n": len(cos), "worst": cos[worst], "worst_id": worst, "mean": statistics.fmean(cos.values())}
    return report


def speed(files, tokenizer_dir, rounds=5, short_runs=40):
    tok = load_tokenizer(tokenizer_dir)
    texts = json.load(open(os.path.join(HERE, "..", "texts.json"), encoding="utf-8"))
    short, medium, long_ = (encode(tok, texts[k]) for k in ("short", "medium", "long"))
    batch = [encode(tok, t) for t in texts["batch32"]]
    sessions = {f: session(f) for f in files}
    res = {f: {"short": [], "medium": [], "long": [], "batch32": []} for f in files}
    for s in sessions.values():
        for _ in range(3):
            run(s, [short])
        run(s, [long_])
    for _ in range(rounds):
        for f, s in sessions.items():
            for _ in range(short_runs):
                t = time.perf_counter(); run(s, [short]); res[f]["short"].append((time.perf_counter() - t) * 1e3)
            for _ in range(5):
                t = time.perf_counter(); run(s, [medium]); res[f]["medium"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter(); run(s, [long_]); res[f]["long"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter(); run(s, batch); res[f]["batch32"].append(32 / (time.perf_counter() - t))
    out = {}
    for f, r in res.items():
        sh = sorted(r["short"])
        out[f] = {"short_p50": statistics.median(sh), "short_p95": sh[int(0.95 * (len(sh) - 1))],
                  "medium_p50": statistics.median(r["medium"]), "long_p50": statistics.median(r["long"]),
                  "batch32_tps": statistics.median(r["batch32"])}
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "quantize":
        quantize(sys.argv[2], sys.argv[3], json.loads(open(sys.argv[4]).read() if os.path.exists(sys.argv[4]) else sys.argv[4]))
    elif cmd == "quality":
        refs = [(os.path.join(SHARED, "reference", "embeddinggemma-300m.st.json"), os.path.join(SHARED, "reference", "sentences.json"))]
        if os.path.exists(os.path.join(HERE, "eval_reference.st.json")) and os.environ.get("QUALITY_SETS") != "shared":
            refs.append((os.path.join(HERE, "eval_reference.st.json"), os.path.join(HERE, "eval_texts.json")))
        print(json.dumps(quality(sys.argv[2], sys.argv[3], refs)))
    elif cmd == "speed":
        args = sys.argv[2:]
        i = args.index("--tokenizer")
        tokdir = args[i + 1]
        files = args[:i] + args[i + 2:]
        print(json.dumps(speed(files, tokdir), indent=1))


if __name__ == "__main__":
    main()
