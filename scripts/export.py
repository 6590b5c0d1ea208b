#!/usr/bin/env python
"""Export a student folder to ONNX (onnx/model.onnx, dynamic batch and size), verified against PyTorch.

    python scripts/export.py --model output/distill
    python scripts/export.py --model output/distill --quantize --push_to_hub --hub_model_id you/my-student

The export is kept only when onnxruntime reproduces PyTorch on a photograph and on held-out generated scenes at
several sizes (the table is printed); otherwise the script exits with status 1 and says why.

onnx/model.onnx is one graph for onnxruntime on the CPU and for onnxruntime-web (transformers.js): at the default
opset 23 each encoder layer's attention is one standard Attention node. --opset 18 writes MatMul/Softmax/MatMul
attention for runtimes older than onnxruntime 1.23.
"""

from __future__ import annotations

import argparse
import logging
import sys

from transformers import HfArgumentParser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from hf_distill.export import ExportArguments, ExportVerificationError, run_export
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parser = HfArgumentParser(
        ExportArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    try:
        (args,) = parser.parse_args_into_dataclasses(argv)
        run_export(args)
    except (ExportVerificationError, FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
