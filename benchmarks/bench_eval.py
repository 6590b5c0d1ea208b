#!/usr/bin/env python
"""Evaluation throughput (images/s) on NYU-sized fixtures.

Writes ``--num_samples`` NYUv2 test frames (480x640, Marigold layout) with the hf_distill.testing writer, then
times, per image: reading a sample (PNG decode + masks), the metrics alone (disparity alignment +
metrics on a precomputed full-size prediction), and the whole evaluation (read, preprocess, forward at
``--processing_res``, bicubic resize, metrics) for randomly initialised models of the given structures
("tiny" = ``tiny_depth_config()``, or an alias such as depthanything-small for the real structure).

    python -m benchmarks.bench_eval --num_samples 8 --models tiny,depthanything-small --processing_res 518

On a CPU shared with other work, compare ``--threads 1``: intra-op threads that wait for busy cores
can make small ops many times slower.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import DepthAnythingForDepthEstimation

from hf_distill.evaluation import BENCHMARKS, evaluate_depth, evaluate_model, load_benchmark, predict_depth
from hf_distill.models import default_image_processor, depth_config, tiny_depth_config
from hf_distill.testing import write_eval_benchmark


def images_per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:8.2f} img/s  ({1000 * seconds / count:8.1f} ms/img)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--models", default="tiny,depthanything-small")
    parser.add_argument("--processing_res", type=int, default=518)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec = BENCHMARKS["nyu"]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.num_samples} NYU frames 480x640")

    with tempfile.TemporaryDirectory() as tmp:
        split = write_eval_benchmark("nyu", Path(tmp), args.num_samples, seed=0)
        samples = load_benchmark("nyu", tmp, split)

        start = time.perf_counter()
        loaded = [samples[i] for i in range(len(samples))]
        print(f"read samples        {images_per_second(len(loaded), time.perf_counter() - start)}")

        # Metric cost does not depend on the values: any positive full-size prediction will do.
        generator = torch.Generator().manual_seed(0)
        triples = [
            (torch.rand(s.depth.shape, generator=generator).to(args.device) + 0.1,
             torch.from_numpy(s.depth).to(args.device), torch.from_numpy(s.valid).to(args.device))
            for s in loaded
        ]
        evaluate_depth(*triples[0], min_depth=spec.min_depth, max_depth=spec.max_depth)  # warm-up
        start = time.perf_counter()
        for triple in triples:
            evaluate_depth(*triple, min_depth=spec.min_depth, max_depth=spec.max_depth)
        print(f"metrics alone       {images_per_second(len(triples), time.perf_counter() - start)}")

        processor = default_image_processor()
        for name in args.models.split(","):
            config = tiny_depth_config() if name == "tiny" else depth_config(name)
            model = DepthAnythingForDepthEstimation(config).eval().to(args.device)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            predict_depth(model, processor, [loaded[0].image], args.processing_res)  # warm-up
            start = time.perf_counter()
            summary, _ = evaluate_model(model, processor, samples, min_depth=spec.min_depth, max_depth=spec.max_depth,
                                        batch_size=args.batch_size, processing_res=args.processing_res)
            elapsed = time.perf_counter() - start
            print(f"evaluate {name} ({params:.2f}M params) @ {args.processing_res}: "
                  f"{images_per_second(summary['num_samples'], elapsed)}")


if __name__ == "__main__":
    main()
