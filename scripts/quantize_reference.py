#!/usr/bin/env python3
"""Quantises an fp32 ONNX graph with ONNX Runtime's own MatMulNBitsQuantizer (symmetric).

The reference the project's q8 quantiser (crates/akidb-embedding-onnx/src/quantize) is
compared with byte for byte (tests/quantize.rs):

    python3 scripts/quantize_reference.py --model DIR/model.onnx --output OUT/model.onnx \
        --bits 8 --block-size 32 --accuracy-level 4

Writes OUT/model.onnx with its weights in OUT/model.onnx_data. Needs the packages pinned in
scripts/requirements-test.txt (onnxruntime, onnx, onnx-ir).
"""

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fp32 model.onnx (external data beside it)")
    parser.add_argument("--output", required=True, help="output .onnx path")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--accuracy-level", type=int, default=4)
    parser.add_argument("--exclude", action="append", default=[], help="node name to keep fp32")
    args = parser.parse_args()

    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantiser logs every node at INFO.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    model = onnx.load(args.model, load_external_data=True)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=args.bits,
        block_size=args.block_size,
        is_symmetric=True,
        accuracy_level=args.accuracy_level,
        nodes_to_exclude=args.exclude,
    )
    quantizer.process()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    onnx.save_model(
        quantizer.model.model,
        args.output,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=os.path.basename(args.output) + "_data",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
