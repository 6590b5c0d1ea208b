"""Evaluation runs above the library: a model on benchmarks across processes, its outputs and card (what
``scripts/evaluate.py`` calls).

Under ``accelerate launch`` (or torchrun) each benchmark's samples are split across processes and the
per-sample rows gathered on the main process, which prints the table and writes the outputs: the summary
JSON, one per-sample CSV per benchmark and, optionally, the model card's evaluation results.

Your own RGB-D data is evaluated the same way: ``--benchmark folder`` (``DIR/images/`` beside ``DIR/depth/``) or
``--dataset_name``, read under the ``--gt_*`` declaration (``evaluation.ground_truth``, ``evaluation.own_data``) and
named by its folder or dataset in the outputs and the card; samples that cannot be scored are skipped and counted.

Several models (``--model A,B,...``, the reference first) are compared instead (``compare_models``): each is
evaluated the same way and profiled on the main process (size and speed, ``evaluation.profile``); the outputs are
the comparison's JSON, Markdown tables and accuracy-latency PNG and, optionally, the cards of the later models.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hf_distill.evaluation.benchmarks import BENCHMARKS, load_benchmark
from hf_distill.evaluation.compare import (
    ModelComparison,
    accelerator_state,
    check_model_list,
    compare_models,
    evaluate_benchmarks,
)
from hf_distill.evaluation.ground_truth import GT_KINDS, GroundTruthDeclaration, parse_invalid_value
from hf_distill.evaluation.metrics import ALIGNMENTS, METRIC_NAMES
from hf_distill.evaluation.own_data import load_dataset_samples, load_folder_samples
from hf_distill.evaluation.predict import load_model_and_processor
from hf_distill.evaluation.profile import is_onnx_model
from hf_distill.hub import update_model_card


FOLDER = "folder"  # --benchmark value of a user's own RGB-D folder


@dataclass
class EvaluationArguments:
    """What to evaluate, on which benchmarks, and where the results go."""

    model: str = field(
        metadata={"help": "Alias, Hub id, model folder, or a weights file with --arch. Several, comma-separated "
                  "(the teacher or reference first; a path ending in .onnx runs with onnxruntime): compare them, "
                  "size and speed next to accuracy."}
    )
    benchmark: str | None = field(
        default=None,
        metadata={"help": f"Comma-separated benchmarks: {', '.join(BENCHMARKS)}, or folder (your RGB-D folder: "
                  "DIR/images/NAME.* beside DIR/depth/NAME.*, or a --split_file of 'IMAGE DEPTH [MASK]' lines)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Benchmark root(s), folder or .tar: one per benchmark (comma-separated), or a parent "
                  "folder holding <name>/ or <name>.tar for each."}
    )
    arch: str | None = field(
        default=None, metadata={"help": "Architecture (alias or config folder) of a weights file given as --model."}
    )
    split_file: str | None = field(
        default=None,
        metadata={"help": "Split list(s), comma-separated like --benchmark; default: the shipped standard lists."},
    )
    alignment: str = field(
        default="disparity", metadata={"help": "Scale-and-shift alignment space.", "choices": ALIGNMENTS}
    )
    processing_res: int | None = field(default=None, metadata={"help": "Default: the model's processor size."})
    batch_size: int = field(default=1, metadata={"help": "Images per forward pass."})
    max_samples: int | None = field(default=None, metadata={"help": "First N samples of each benchmark."})
    output_json: str | None = field(default=None, metadata={"help": "Summary metrics as JSON."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Per-sample CSVs (default: next to --output_json)."}
    )
    update_card: bool = field(
        default=False,
        metadata={"help": "Write the results into the model folder's README.md (with several models: into the card "
                  "of every local model folder after the first, with the size-and-speed table)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Evaluate on a dataset with ground truth that datasets.load_dataset reads (a Hub id, a local "
                  "folder of parquet/arrow files, a save_to_disk folder), with --image_column and --depth_column."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    dataset_split: str = field(default="test", metadata={"help": "Split of --dataset_name."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision of --dataset_name."})
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    depth_column: str = field(default="depth", metadata={"help": "Ground-truth column of --dataset_name."})
    mask_column: str | None = field(
        default=None, metadata={"help": "Valid-pixel mask column of --dataset_name (non-zero = valid)."}
    )
    gt_kind: str = field(
        default="depth",
        metadata={"help": "What your ground truth stores (folder, --dataset_name).", "choices": GT_KINDS},
    )
    gt_scale: float | None = field(
        default=None,
        metadata={"help": "Stored value / scale = the kind's unit (1000: millimetre PNGs, 256: KITTI-style PNGs). "
                  "Needed for metric kinds stored as integers; float files default to 1."},
    )
    gt_invalid: str = field(
        default="0", metadata={"help": "Stored value meaning unknown, or 'none' (non-finite values always are)."}
    )
    focal_baseline: float | None = field(
        default=None,
        metadata={"help": "With --gt_kind disparity: focal length (px) x baseline (m), so depth = this / disparity is "
                  "in metres; without it disparity ground truth is relative."},
    )
    min_depth: float | None = field(
        default=None, metadata={"help": "Valid derived depth above this (default 1e-3 m; 0 for relative disparity)."}
    )
    max_depth: float | None = field(default=None, metadata={"help": "Valid derived depth below this (default inf)."})
    profile_batch_size: int = field(
        default=4, metadata={"help": "With several models: the batch of the throughput and peak-memory figures."}
    )
    profile_repeats: int = field(
        default=10, metadata={"help": "With several models: timed forwards at batch 1 (after 2 warm-up ones)."}
    )
    profile_threads: int | None = field(
        default=None, metadata={"help": "With several models: CPU threads while timing (default: torch's count)."}
    )


def benchmark_names(benchmark: str) -> list[str]:
    """The comma-separated ``--benchmark`` value as a list of known benchmark names (``folder``: own data)."""
    names = [name.strip() for name in benchmark.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS and name != FOLDER]
    if not names or unknown:
        raise ValueError(f"--benchmark: unknown {unknown or 'empty list'}; choose from {', '.join(BENCHMARKS)}, "
                         f"{FOLDER}")
    return names


def ground_truth_declaration(args: EvaluationArguments) -> GroundTruthDeclaration:
    """The ``--gt_*`` declaration of own data, checked against ``--alignment``."""
    declaration = GroundTruthDeclaration(
        kind=args.gt_kind, scale=args.gt_scale, invalid_value=parse_invalid_value(args.gt_invalid),
        focal_baseline=args.focal_baseline, min_depth=args.min_depth, max_depth=args.max_depth,
    )
    if not declaration.is_metric and args.alignment != "disparity":
        raise ValueError(f"--gt_kind disparity without --focal_baseline is relative ground truth: it is aligned in "
                         f"disparity space (--alignment disparity), not with --alignment {args.alignment}")
    return declaration


def check_arguments(args: EvaluationArguments) -> None:
    """The checks of the flags themselves, before any file is read or model loaded: a ValueError names the flag."""
    if args.benchmark is None and args.dataset_name is None:
        raise ValueError("give --benchmark (with --data_dir) or --dataset_name")
    names = []
    if args.benchmark is not None:
        if args.data_dir is None:
            raise ValueError("--benchmark needs --data_dir")
        names = benchmark_names(args.benchmark)
        benchmark_roots(names, args.data_dir)
        split_files(names, args.split_file)
    if FOLDER in names or args.dataset_name is not None:
        ground_truth_declaration(args)


def load_eval_sets(args: EvaluationArguments) -> dict:
    """``{name: samples}`` of every benchmark of ``--benchmark`` (a ``folder`` under its own name) and of
    ``--dataset_name``; every listed file is checked before any model loads."""
    check_arguments(args)
    sets = {}
    if args.benchmark is not None:
        names = benchmark_names(args.benchmark)
        roots, lists = benchmark_roots(names, args.data_dir), split_files(names, args.split_file)
        for name in names:
            if name == FOLDER:
                samples = load_folder_samples(roots[name], ground_truth_declaration(args), split_file=lists[name],
                                              max_samples=args.max_samples)
                sets[samples.label] = samples
            else:
                sets[name] = load_benchmark(name, roots[name], lists[name], args.max_samples)
    if args.dataset_name is not None:
        samples = load_dataset_samples(
            args.dataset_name, ground_truth_declaration(args), config_name=args.dataset_config_name,
            split=args.dataset_split, revision=args.dataset_revision, image_column=args.image_column,
            depth_column=args.depth_column, mask_column=args.mask_column, max_samples=args.max_samples,
        )
        sets[samples.label] = samples
    return sets


def data_descriptions(datasets: dict) -> dict[str, dict[str, str]]:
    """``{name: {"dataset", "ground_truth"}}`` of the own-data sets among ``datasets``, for the summary JSON."""
    return {name: {"dataset": samples.label, "ground_truth": samples.declaration.describe()}
            for name, samples in datasets.items() if hasattr(samples, "declaration")}


def split_files(names: list[str], split_file: str | None) -> dict[str, Path | None]:
    """Map each benchmark to its split list (None: the shipped one)."""
    if split_file is None:
        return dict.fromkeys(names)
    files = [Path(p) for p in split_file.split(",")]
    if len(files) != len(names):
        raise ValueError(f"--split_file lists {len(files)} files for {len(names)} benchmarks")
    return dict(zip(names, files))


def benchmark_roots(names: list[str], data_dir: str) -> dict[str, Path]:
    """Map each benchmark to its data root: one root per benchmark (comma-separated), or for several benchmarks
    one parent folder holding ``<name>.tar`` or ``<name>/`` for each."""
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
    """One aligned text row per benchmark: sample count and every metric to 4 decimals."""
    header = ["benchmark", "samples", *METRIC_NAMES]
    rows = [[name, str(r["num_samples"]) + (f" (+{r['num_skipped']} skipped)" if r.get("num_skipped") else ""),
             *(f"{r[m]:.4f}" for m in METRIC_NAMES)] for name, r in results.items()]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in [header, *rows]]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = ["error"] if any(row.get("error") for row in rows) else []
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", *METRIC_NAMES, *errors])
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(
    args: EvaluationArguments, results: dict[str, dict[str, float]], all_rows: dict[str, list[dict]],
    descriptions: dict[str, dict[str, str]] | None = None,
) -> None:
    """The summary JSON (one benchmark's metrics, or one object per benchmark; own data also names itself and its
    ground-truth declaration, ``descriptions``), ``<json stem>_<name>_samples.csv`` per benchmark, and the model
    card update, as ``args`` asks."""
    if args.output_json:
        path = Path(args.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        described = {name: {**(descriptions or {}).get(name, {}), **metrics} for name, metrics in results.items()}
        payload = next(iter(described.values())) if len(described) == 1 else described
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"summary written to {path}")
    csv_dir = Path(args.output_dir) if args.output_dir else Path(args.output_json).parent if args.output_json else None
    if csv_dir is not None:
        stem = Path(args.output_json).stem + "_" if args.output_json else ""
        for name, rows in all_rows.items():
            csv_path = csv_dir / f"{stem}{file_name(name)}_samples.csv"
            _write_csv(csv_path, rows)
            print(f"per-sample metrics written to {csv_path}")
    if args.update_card:
        update_model_card(args.model, results)
        print(f"model card updated: {Path(args.model) / 'README.md'}")


def file_name(name: str) -> str:
    """A benchmark or dataset name as part of a file name (a Hub id's ``/`` and spaces become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "data"


def update_cards(comparison: ModelComparison) -> list[Path]:
    """Write each local model folder after the first into its own card: its results and the size-and-speed tables
    (itself highlighted). Returns the cards written."""
    cards = []
    for name in comparison.names[1:]:
        if is_onnx_model(name) or not Path(name).is_dir():
            continue
        update_model_card(name, comparison.metrics[name], size_speed=comparison.markdown(highlight=name))
        cards.append(Path(name) / "README.md")
    return cards


def run_comparison(args: EvaluationArguments) -> ModelComparison:
    """``args.model`` lists several models: ``compare_models`` on ``args.benchmark``; the main process prints the
    tables and writes the JSON (with the Markdown and the PNG beside it) and the cards as ``args`` asks."""
    models = [name.strip() for name in args.model.split(",") if name.strip()]
    check_model_list(models)
    if args.update_card and not any(Path(m).is_dir() and not is_onnx_model(m) for m in models[1:]):
        raise ValueError("--update_card needs a local model folder after the first --model")
    datasets = load_eval_sets(args)
    comparison = compare_models(
        models, datasets, arch=args.arch, alignment=args.alignment, batch_size=args.batch_size,
        processing_res=args.processing_res, profile_batch_size=args.profile_batch_size,
        profile_repeats=args.profile_repeats, profile_threads=args.profile_threads,
    )
    if accelerator_state().is_main_process:
        print(comparison.markdown())
        if args.output_json:
            for path in comparison.write(args.output_json):
                print(f"written: {path}")
        if args.update_card:
            for card in update_cards(comparison):
                print(f"model card updated: {card}")
    return comparison


def run_evaluation(args: EvaluationArguments) -> dict[str, dict[str, float]]:
    """Evaluate ``args.model`` on every benchmark of ``args.benchmark``; return ``{benchmark: summary metrics}``.

    Every listed file is checked before the model loads. The samples are split across the processes of the
    launch; the main process gathers the per-sample rows, prints the table and writes the outputs. With several
    comma-separated models, ``run_comparison`` runs instead and ``{model: {benchmark: metrics}}`` is returned.
    """
    if "," in args.model:
        return run_comparison(args).metrics
    if args.update_card and not Path(args.model).is_dir():
        raise ValueError(f"--update_card needs --model to be a local model folder, got {args.model}")
    datasets = load_eval_sets(args)

    state = accelerator_state()
    model, processor = load_model_and_processor(args.model, args.arch)
    model.to(state.device)
    results, all_rows = evaluate_benchmarks(
        model, processor, datasets, state, alignment=args.alignment, batch_size=args.batch_size,
        processing_res=args.processing_res,
    )
    if state.is_main_process:
        print(format_table(results))
        write_outputs(args, results, all_rows, data_descriptions(datasets))
    return results
