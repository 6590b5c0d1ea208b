#!/usr/bin/env python
"""Evaluate a depth model on zero-shot benchmarks (NYUv2, KITTI, ETH3D, ScanNet, DIODE) or on your own RGB-D data.

    python scripts/evaluate.py --model OUT_DIR --benchmark nyu --data_dir data/nyuv2/nyu_labeled_extracted.tar \
        --output_json results.json --update_card
    accelerate launch scripts/evaluate.py --model depthanything-small --benchmark nyu,kitti --data_dir data/eval
    python scripts/evaluate.py --model depthanything-large,OUT_DIR,OUT_DIR/onnx/model.onnx --benchmark nyu \
        --data_dir data/eval/nyu --output_json compare/nyu.json --update_card
    python scripts/evaluate.py --model OUT_DIR --benchmark folder --data_dir my_rgbd --gt_scale 1000  # mm PNGs
    python scripts/evaluate.py --model OUT_DIR --benchmark folder --data_dir middlebury --gt_kind disparity
    python scripts/evaluate.py --model OUT_DIR --dataset_name you/rgbd --depth_column depth --gt_kind depth

Your own data: ``--benchmark folder`` reads DIR/images/NAME.* beside DIR/depth/NAME.* (PNG, .npy, .pfm, .exr; an
optional DIR/mask/NAME.*), or the ``IMAGE DEPTH [MASK]`` lines of --split_file; ``--dataset_name`` reads any dataset
datasets.load_dataset reads. --gt_kind (depth, disparity, inverse_depth), --gt_scale, --gt_invalid, --focal_baseline,
--min_depth and --max_depth declare what the ground truth stores. Samples that cannot be scored are skipped, counted
and named in the per-sample CSV.

Several comma-separated models (the teacher or reference first) are compared: one table per benchmark with
parameters, GFLOPs at the processing resolution, latency at batch 1 (median / p90), throughput and peak memory at
--profile_batch_size, and the metrics, with ratios against the first model; --output_json also writes the
Markdown (.md) and a PNG of accuracy against latency beside the JSON; --update_card writes the size-and-speed
table into the card of every local model folder after the first. A path ending in .onnx runs with onnxruntime.

With several benchmarks, ``--data_dir`` is either a comma-separated list (one root per benchmark) or a
parent folder holding ``<name>/`` or ``<name>.tar`` for each. Under ``accelerate launch`` the samples
are split across processes and the per-sample rows gathered on the main process, which writes outputs.
Several CPU processes (no GPU): ``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 scripts/evaluate.py ...``.
"""

from __future__ import annotations

import argparse
import sys

from transformers import HfArgumentParser

from hf_distill.evaluation_run import EvaluationArguments, run_evaluation


def parse_args(argv: list[str] | None = None) -> EvaluationArguments:
    parser = HfArgumentParser(
        EvaluationArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_evaluation(args)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
