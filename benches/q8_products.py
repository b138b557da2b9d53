#!/usr/bin/env python3
"""EmbeddingGemma-300m's 168 weight products alone, as ONNX Runtime runs them for `q8`.

    python3 benches/q8_products.py --rows 6 [--threads 2] [--runs 30] [--rounds 8]

Builds, in a temporary folder, graphs of nothing but the products of EmbeddingGemma's 24
layers in their shapes (q 768→768, k and v 768→256, o 768→768, gate and up 768→1152, down
1152→768; random weights, which do not change the time): as `MatMulNBits` with the `q8`
recipe's block sizes (`recipe`: 128, v 32, down 16), with blocks of 128 everywhere
(`all128`), in 4 bits (`all128_4bit`), and as fp32 `MatMul` (`fp32`). Times them interleaved
on `--rows` rows (a text's tokens) and prints each graph's P50 and P95 in ms.

What it answers: how much of a short text's `q8` run the products take, and whether the
8-bit kernel is bound by memory (its time flat in the rows) or by its arithmetic (its time
growing with them). Needs `onnx` and `onnxruntime`
(`python3 -m pip install -r scripts/requirements-test.txt`).
"""
import argparse
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

LAYER = [("q", 768, 768), ("k", 768, 256), ("v", 768, 256), ("o", 768, 768),
         ("gate", 768, 1152), ("up", 768, 1152), ("down", 1152, 768)]
GRAPHS = {
    "recipe": ({"v": 32, "down": 16}, 8),
    "all128": ({}, 8),
    "all128_4bit": ({}, 4),
    "fp32": (None, None),
}


def build(path, blocks, bits, layers=24):
    rng = np.random.default_rng(0)
    nodes, inits, outputs = [], [], []

    def product(name, x, k, n):
        y = name + "_y"
        if blocks is None:
            w = rng.standard_normal((k, n)).astype(np.float32) * 0.02
            inits.append(numpy_helper.from_array(w, name + "_w"))
            nodes.append(helper.make_node("MatMul", [x, name + "_w"], [y]))
            return y
        block = blocks.get(name.split("_")[0], 128)
        count = k // block
        q = rng.integers(0, 256, (n, count, block * bits // 8), dtype=np.uint8)
        inits.append(numpy_helper.from_array(q, name + "_q"))
        scales = rng.random(n * count).astype(np.float32) * 1e-3
        inits.append(numpy_helper.from_array(scales, name + "_s"))
        nodes.append(helper.make_node(
            "MatMulNBits", [x, name + "_q", name + "_s"], [y], domain="com.microsoft",
            K=k, N=n, bits=bits, block_size=block, accuracy_level=4))
        return y

    x = "x"
    for layer in range(layers):
        q = product(f"q_{layer}", x, 768, 768)
        outputs += [product(f"k_{layer}", x, 768, 256), product(f"v_{layer}", x, 768, 256)]
        o = product(f"o_{layer}", q, 768, 768)
        gate = product(f"gate_{layer}", o, 768, 1152)
        up = product(f"up_{layer}", o, 768, 1152)
        nodes.append(helper.make_node("Mul", [gate, up], [f"m_{layer}"]))
        x = product(f"down_{layer}", f"m_{layer}", 1152, 768)
    outputs.append(x)
    graph = helper.make_graph(
        nodes, "products", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", 768])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, path, save_as_external_data=True,
              location=os.path.basename(path) + ".data")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sessions = {}
        for name, (blocks, bits) in GRAPHS.items():
            path = os.path.join(folder, name + ".onnx")
            build(path, blocks, bits)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            sessions[name] = ort.InferenceSession(path, options,
                                                  providers=["CPUExecutionProvider"])
        feed = {"x": np.random.default_rng(1).standard_normal((1, args.rows, 768))
                .astype(np.float32)}
        times = {name: [] for name in sessions}
        names = list(sessions)
        for round_ in range(args.rounds):
            for name in (names if round_ % 2 == 0 else names[::-1]):
                sessions[name].run(None, feed)
                for _ in range(args.runs):
                    start = time.perf_counter()
                    sessions[name].run(None, feed)
                    times[name].append((time.perf_counter() - start) * 1e3)
    for name, values in times.items():
        print(f"rows {args.rows} threads {args.threads} {name:12s} "
              f"P50 {np.median(values):6.2f} ms  P95 {np.percentile(values, 95):6.2f} ms")


if __name__ == "__main__":
    main()
