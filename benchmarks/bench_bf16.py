#!/usr/bin/env python
"""Does the demo learn under bf16 as it does in float32? Both runs side by side, and how their outputs survive bf16.

    python -m benchmarks.bench_bf16                          # the demo recipe (400 steps), float32 and --bf16
    python -m benchmarks.bench_bf16 --max_steps 100 --threads 2

Runs ``scripts/distill.py --demo`` twice at once, in two processes with ``--threads`` threads each: once in float32
and once with ``--bf16`` (CPU autocast: teacher and student compute in bfloat16, as a GPU run does). Each writes its
``demo_report.json`` (teacher, student before and after, held-out generated scenes). Then, for the shipped teacher
and each final student, on 8 held-out scenes: the raw output's MAD / median and the correlation between its bfloat16
and float32 predictions after median/MAD normalisation. Writes ``bench_bf16.json`` and ``bench_bf16.md`` in
``--output_dir`` and prints the Markdown table; the headline is the bf16 student's final abs_rel over the float32
student's (same thread count, so both figures are deterministic).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DepthAnythingForDepthEstimation

from hf_distill.demo import DEMO_PROCESSING_SIZE, DEMO_TEACHER, demo_eval_samples
from hf_distill.models import default_image_processor

REPO = Path(__file__).resolve().parents[1]

PRECISIONS = {"float32": [], "bf16": ["--bf16"]}


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> per-map (x - median) / MAD, float64."""
    flat = maps.double().flatten(1)
    median = flat.median(dim=1, keepdim=True).values
    return (flat - median) / (flat - median).abs().mean(dim=1, keepdim=True).clamp(min=1e-30)


def conditioning(model: DepthAnythingForDepthEstimation, pixel_values: torch.Tensor) -> dict[str, float]:
    """Raw-output MAD/median (smallest over maps) and the bf16-vs-float32 correlation of the normalised maps
    (smallest over maps; 0 when a bf16 map is one constant)."""
    model = model.eval()
    with torch.no_grad():
        full = model(pixel_values=pixel_values).predicted_depth
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(pixel_values=pixel_values).predicted_depth.float()
    flat = full.double().flatten(1)
    median = flat.median(dim=1).values
    spread = (flat - median[:, None]).abs().mean(dim=1) / median.abs()
    a, b = normalized(full), normalized(half)
    correlations = [float(np.corrcoef(x, y)[0, 1]) if y.std() > 0 else 0.0 for x, y in zip(a.numpy(), b.numpy())]
    return {"mad_over_median_min": float(spread.min()), "bf16_correlation_min": min(correlations),
            "bf16_unique_values_min": int(min(len(torch.unique(m)) for m in half))}


def run_demos(output_dir: Path, threads: int, extra: list[str]) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    processes, started = {}, time.perf_counter()
    for name, flags in PRECISIONS.items():
        log = open(output_dir / f"{name}.log", "w")
        command = [sys.executable, str(REPO / "scripts" / "distill.py"), "--demo", "--output_dir",
                   str(output_dir / name), *flags, *extra]
        processes[name] = (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for name, (process, log) in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"the {name} demo failed: see {output_dir / f'{name}.log'}")
        log.close()
        results[name] = {"report": json.loads((output_dir / name / "demo_report.json").read_text()),
                         "wall_s": round(time.perf_counter() - started, 1)}
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="output/bench_bf16")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (the runs go in parallel)")
    parser.add_argument("--max_steps", type=int, default=None, help="override the demo recipe's 400 steps")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    extra = [] if args.max_steps is None else ["--max_steps", str(args.max_steps)]
    results = run_demos(output_dir, args.threads, extra)

    torch.set_num_threads(args.threads)
    processor = default_image_processor(size=DEMO_PROCESSING_SIZE)
    pixels = processor(images=[np.array(s.image) for s in demo_eval_samples(8)], return_tensors="pt").pixel_values
    results["teacher_conditioning"] = conditioning(DepthAnythingForDepthEstimation.from_pretrained(DEMO_TEACHER), pixels)
    for name in PRECISIONS:
        student = DepthAnythingForDepthEstimation.from_pretrained(output_dir / name)
        results[name]["student_conditioning"] = conditioning(student, pixels)
    ratio = results["bf16"]["report"]["student_after"]["abs_rel"] / results["float32"]["report"]["student_after"]["abs_rel"]
    results["bf16_over_float32_abs_rel"] = ratio
    results["settings"] = {"threads_per_run": args.threads, "max_steps": args.max_steps or "recipe (400)",
                           "torch": torch.__version__}

    lines = ["| run | student before abs_rel | after abs_rel | after delta1 | teacher abs_rel | final student "
             "MAD/median | bf16 vs float32 correlation |", "|---|---|---|---|---|---|---|"]
    for name in PRECISIONS:
        report, cond = results[name]["report"], results[name]["student_conditioning"]
        lines.append(f"| {name} | {report['student_before']['abs_rel']:.4f} | {report['student_after']['abs_rel']:.4f} "
                     f"| {report['student_after']['delta1']:.4f} | {report['teacher']['abs_rel']:.4f} "
                     f"| {cond['mad_over_median_min']:.3f} | {cond['bf16_correlation_min']:.4f} |")
    teacher = results["teacher_conditioning"]
    lines.append(f"\nShipped teacher: MAD/median >= {teacher['mad_over_median_min']:.3f}, bf16 vs float32 correlation "
                 f">= {teacher['bf16_correlation_min']:.4f}. bf16 / float32 final abs_rel: {ratio:.3f}.")
    table = "\n".join(lines)
    (output_dir / "bench_bf16.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "bench_bf16.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
