#!/usr/bin/env python
"""Evaluate a depth model on zero-shot benchmarks (NYUv2, KITTI, ETH3D, ScanNet, DIODE).

    python scripts/evaluate.py --model OUT_DIR --benchmark nyu --data_dir data/nyuv2/nyu_labeled_extracted.tar \
        --output_json results.json --update_card
    accelerate launch scripts/evaluate.py --model depthanything-small --benchmark nyu,kitti --data_dir data/eval

With several benchmarks, ``--data_dir`` is either a comma-separated list (one root per benchmark) or a
parent folder holding ``<name>/`` or ``<name>.tar`` for each. Under ``accelerate launch`` the samples
are split across processes and the per-sample rows gathered on the main process, which writes outputs.
Several CPU processes (no GPU): ``ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 scripts/evaluate.py ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env

from hf_distill.evaluation import (
    BENCHMARKS,
    METRIC_NAMES,
    evaluate_model,
    load_benchmark,
    load_model_and_processor,
    summarize_rows,
)
from hf_distill.evaluation.metrics import ALIGNMENTS
from hf_distill.hub import update_model_card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="alias, Hub id, model folder, or a weights file with --arch")
    parser.add_argument("--arch", default=None, help="architecture (alias or config folder) for a weights file")
    parser.add_argument("--benchmark", required=True, help=f"comma-separated: {', '.join(BENCHMARKS)}")
    parser.add_argument("--data_dir", required=True, help="benchmark root(s): folder or .tar (see above)")
    parser.add_argument("--split_file", default=None, help="split list(s), comma-separated like --benchmark; "
                        "default: the shipped standard lists")
    parser.add_argument("--alignment", default="disparity", choices=ALIGNMENTS)
    parser.add_argument("--processing_res", type=int, default=None, help="default: the model's processor size")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--max_samples", type=int, default=None, help="first N samples of each benchmark")
    parser.add_argument("--output_json", default=None, help="summary metrics as JSON")
    parser.add_argument("--output_dir", default=None, help="per-sample CSVs (default: next to --output_json)")
    parser.add_argument("--update_card", action="store_true", help="write results into the model folder's README.md")
    return parser.parse_args(argv)


def split_files(names: list[str], split_file: str | None) -> dict[str, Path | None]:
    """Map each benchmark to its split list (None: the shipped one)."""
    if split_file is None:
        return dict.fromkeys(names)
    files = [Path(p) for p in split_file.split(",")]
    if len(files) != len(names):
        raise ValueError(f"--split_file lists {len(files)} files for {len(names)} benchmarks")
    return dict(zip(names, files))


def benchmark_roots(names: list[str], data_dir: str) -> dict[str, Path]:
    """Map each benchmark to its data root (see the module docstring)."""
    roots = [Path(p) for p in data_dir.split(",")]
    if len(names) == 1:
        if len(roots) != 1:
            raise ValueError(f"--data_dir lists {len(roots)} roots for one benchmark")
        return {names[0]: roots[0]}
    if len(roots) == len(names):
        return dict(zip(names, roots))
    if len(roots) != 1:
        raise ValueError(f"--data_dir lists {len(roots)} roots for {len(names)} benchmarks")
    parent = roots[0]
    result = {}
    for name in names:
        tar = parent / f"{name}.tar"
        result[name] = tar if tar.is_file() else parent / name
    return result


def format_table(results: dict[str, dict[str, float]]) -> str:
    header = ["benchmark", "samples", *METRIC_NAMES]
    rows = [[name, str(r["num_samples"]), *(f"{r[m]:.4f}" for m in METRIC_NAMES)] for name, r in results.items()]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [header, *rows]]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", *METRIC_NAMES])
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    names = [n.strip() for n in args.benchmark.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if not names or unknown:
        raise ValueError(f"--benchmark: unknown {unknown or 'empty list'}; choose from {', '.join(BENCHMARKS)}")
    if args.update_card and not Path(args.model).is_dir():
        raise ValueError(f"--update_card needs --model to be a local model folder, got {args.model}")
    roots, lists = benchmark_roots(names, args.data_dir), split_files(names, args.split_file)
    datasets = {n: load_benchmark(n, roots[n], lists[n], args.max_samples) for n in names}

    # ACCELERATE_USE_CPU (set by `accelerate launch --cpu`) allows CPU multi-process runs (gloo).
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    model, processor = load_model_and_processor(args.model, args.arch)
    model.to(state.device)

    results, all_rows = {}, {}
    for name, samples in datasets.items():
        spec = BENCHMARKS[name]
        with state.split_between_processes(list(range(len(samples)))) as indices:
            _, rows = evaluate_model(
                model,
                processor,
                samples.select(indices),
                alignment=args.alignment,
                min_depth=spec.min_depth,
                max_depth=spec.max_depth,
                batch_size=args.batch_size,
                processing_res=args.processing_res,
                progress=state.is_local_main_process,
            )
        if state.num_processes > 1:
            rows = gather_object(rows)
        all_rows[name] = rows
        results[name] = summarize_rows(rows)

    if state.is_main_process:
        print(format_table(results))
        write_outputs(args, results, all_rows)
    return results


def write_outputs(args: argparse.Namespace, results: dict, all_rows: dict[str, list[dict]]) -> None:
    if args.output_json:
        path = Path(args.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = next(iter(results.values())) if len(results) == 1 else results
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"summary written to {path}")
    csv_dir = Path(args.output_dir) if args.output_dir else Path(args.output_json).parent if args.output_json else None
    if csv_dir is not None:
        stem = Path(args.output_json).stem + "_" if args.output_json else ""
        for name, rows in all_rows.items():
            csv_path = csv_dir / f"{stem}{name}_samples.csv"
            write_csv(csv_path, rows)
            print(f"per-sample metrics written to {csv_path}")
    if args.update_card:
        update_model_card(args.model, results)
        print(f"model card updated: {Path(args.model) / 'README.md'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
