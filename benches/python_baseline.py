#!/usr/bin/env python3
"""The Python original ("python-bridge"): onnxruntime + tokenizers, same protocol and JSON as
`cargo run --release --example latency`.

    python3 benches/python_baseline.py --model DIR --threads 2 --runs 200

Pipeline per call, as the original service did it: `Tokenizer.encode_batch` (padding to the
longest text of the call, truncation at the model's cap), one `InferenceSession.run`, then the
graph's `sentence_embedding` output if it has one (EmbeddingGemma), else mean pooling of
`last_hidden_state` over the attention mask (MiniLM), then L2 normalisation.

Prints one JSON line: load_ms, rss_mb, short/medium/long {tokens, p50, p95, p99} (ms, one text
per call), batch32_texts_per_s. `--cold` prints only the start-up figures (see --help).
Install its dependencies with `python3 -m pip install -r benches/requirements.txt`.
"""
import argparse
import json
import os
import sys
import time

T_IMPORT = time.perf_counter()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

VARIANT_FILES = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "q4": "model_q4.onnx",
    "quantized": "model_quantized.onnx",
    "int8": "model_quantized.onnx",
    "q8": "model_q8.onnx",
}
WARMUP_CALLS = 5


def rss_mb():
    """VmRSS of this process in MiB, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def find_onnx(folder, variant):
    name = VARIANT_FILES.get(variant, variant)
    for candidate in (os.path.join(folder, name), os.path.join(folder, "onnx", name)):
        if os.path.isfile(candidate):
            return candidate
    sys.exit(f"python_baseline: no {name} in {folder} or {folder}/onnx")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def token_cap(folder):
    """sentence-transformers' max_seq_length, else the tokenizer's model_max_length."""
    st = read_json(os.path.join(folder, "sentence_bert_config.json"))
    if st and "max_seq_length" in st:
        return int(st["max_seq_length"])
    tc = read_json(os.path.join(folder, "tokenizer_config.json")) or {}
    cap = tc.get("model_max_length")
    if isinstance(cap, (int, float)) and cap < 1_000_000:
        return int(cap)
    return 512


def pad_id(tokenizer, folder):
    config = read_json(os.path.join(folder, "config.json")) or {}
    if isinstance(config.get("pad_token_id"), int):
        return config["pad_token_id"]
    for token in ("<pad>", "[PAD]"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    return 0


class Embedder:
    """Tokenizer + session + pooling, loaded from a model folder."""

    def __init__(self, folder, variant, threads):
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        # tokenizer.json files carry their own settings (MiniLM's pads every text to 128 and
        # truncates at 128): replace them with sentence-transformers' semantics.
        self.tokenizer.enable_truncation(max_length=token_cap(folder))
        pid = pad_id(self.tokenizer, folder)
        self.tokenizer.enable_padding(pad_id=pid, pad_token=self.tokenizer.id_to_token(pid))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            find_onnx(folder, variant), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "sentence_embedding" if "sentence_embedding" in outputs else "last_hidden_state"

    def embed(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (out,) = self.session.run([self.output], feed)
        if self.output == "last_hidden_state":
            weights = mask[:, :, None].astype(np.float32)
            out = (out * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)

    def tokens(self, text):
        # Padding to the longest text of a one-text call adds nothing.
        return len(self.tokenizer.encode(text).ids)


def percentile(sorted_ms, q):
    """Nearest-rank percentile of an ascending list (same rule as the Rust example)."""
    rank = max(1, int(np.ceil(q / 100.0 * len(sorted_ms))))
    return sorted_ms[min(rank, len(sorted_ms)) - 1]


def latency(embedder, text, runs):
    for _ in range(WARMUP_CALLS):
        embedder.embed([text])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        embedder.embed([text])
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "tokens": embedder.tokens(text),
        "p50": round(percentile(times, 50), 3),
        "p95": round(percentile(times, 95), 3),
        "p99": round(percentile(times, 99), 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--variant", default="fp32", help="fp32|fp16|q4|quantized or a .onnx name")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--texts", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "texts.json")
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="load, embed the short text once, print load_ms, rss_mb, first_embed_ms and "
        "start_to_first_ms (from --t0-ns, the caller's wall clock before exec, to the first vector)",
    )
    parser.add_argument("--t0-ns", type=int, default=None)
    parser.add_argument("--vectors", default=None, help="write the medium and batch32 vectors here")
    args = parser.parse_args()

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)

    started = time.perf_counter()
    embedder = Embedder(args.model, args.variant, args.threads)
    embedder.embed(["warm-up"])  # as the Rust provider does inside load
    load_ms = (time.perf_counter() - started) * 1e3
    rss = rss_mb()

    if args.cold:
        first = time.perf_counter()
        embedder.embed([texts["short"]])
        done_ns = time.time_ns()
        result = {
            "impl": "python",
            "load_ms": round(load_ms, 1),
            "import_ms": round((started - T_IMPORT) * 1e3, 1),
            "rss_mb": round(rss, 1),
            "first_embed_ms": round((time.perf_counter() - first) * 1e3, 3),
        }
        if args.t0_ns is not None:
            result["start_to_first_ms"] = round((done_ns - args.t0_ns) / 1e6, 1)
        print(json.dumps(result))
        return

    result = {"impl": "python", "model": args.model, "threads": args.threads, "runs": args.runs,
              "load_ms": round(load_ms, 1), "rss_mb": round(rss, 1)}
    for key in ("short", "medium", "long"):
        result[key] = latency(embedder, texts[key], args.runs)

    batch = texts["batch32"]
    for _ in range(2):
        embedder.embed(batch)
    batch_runs = max(5, args.runs // 10)
    times = []
    for _ in range(batch_runs):
        start = time.perf_counter()
        embedder.embed(batch)
        times.append(time.perf_counter() - start)
    result["batch32_texts_per_s"] = round(len(batch) / float(np.median(times)), 1)
    result["rss_end_mb"] = round(rss_mb(), 1)

    if args.vectors:
        with open(args.vectors, "w", encoding="utf-8") as f:
            json.dump({"medium": embedder.embed([texts["medium"]])[0].tolist(),
                       "batch32": embedder.embed(batch).tolist()}, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
