"""The paper's ablations (Tables 1 and 2, auxiliary terms, student size) at toy scale, on CPU.

    python -m benchmarks.ablation                          # the whole grid, 3 seeds (about 35 minutes on 2 cores)
    python -m benchmarks.ablation --quick                  # 2 configurations, 1 seed, a few steps (under a minute)
    python -m benchmarks.ablation --output_dir DIR --seeds 5 --steps 400 --workers 2

Every run is the demo recipe (`--config demo`: the shipped demo teacher, a random demo student, generated scenes)
on square 224x224 scenes with regions of 112 to 224 pixels, changed only by the flags of its configuration, trained
through the real `DistillationTrainer` and evaluated on held-out generated scenes with exact depth (disparity
alignment, as the demo). Metrics: abs_rel, delta1 and `edge_grad`, the error of log-depth gradients on pixels next
to ground-truth depth edges (see `edge_gradient_error`). Writes ablation.json (every run: configuration, seed,
metrics, wall time, evaluation curve), ablation.md (tables in the paper's layout) and ablation.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.demo_runs import SCENE_SIDE, demo_run_argv, init_worker

if TYPE_CHECKING:
    import torch

EDGE_LOG_JUMP = 0.05  # a ground-truth depth edge: log-depth changes by more than 5% between neighbouring pixels


@dataclass(frozen=True)
class Configuration:
    group: str  # which table it belongs to
    name: str
    flags: tuple[str, ...]


NO_PATCHES = ("--lambda_lg", "0", "--num_local_patches", "0")
SC_ONLY = NO_PATCHES
LG_ONLY = ("--lambda_sc", "0")
GRID = [
    # Table 2: which contexts (hybrid normalisation, feature and gradient terms on, as the paper's final model)
    Configuration("contexts", "no crop", ("--min_region", str(SCENE_SIDE), *NO_PATCHES)),
    Configuration("contexts", "LG", LG_ONLY),
    Configuration("contexts", "SC", SC_ONLY),
    Configuration("contexts", "SC+LG", ()),
    # Table 1: which normalisation, under shared-context and under local-global (hybrid = the rows above)
    *[Configuration("normalization", f"SC {norm}", (*SC_ONLY, "--normalization", norm))
      for norm in ("global", "none", "local")],
    *[Configuration("normalization", f"LG {norm}", (*LG_ONLY, "--normalization", norm))
      for norm in ("global", "none", "local")],
    Configuration("hdn variants", "SC+LG dp", ("--hdn_variant", "dp")),
    Configuration("hdn variants", "SC+LG ds", ("--hdn_variant", "ds")),
    Configuration("auxiliary terms", "SC+LG without feat and grad", ("--lambda_feat", "0", "--lambda_grad", "0")),
    Configuration("student size", "SC+LG, student of the teacher's size", ("--student_arch", "demo-teacher")),
]
QUICK = [c for c in GRID if c.name in ("SC", "SC+LG")]


def edge_gradient_error(depth: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean |d log(depth) - d log(gt)| over horizontal and vertical neighbour pairs next to a ground-truth edge.

    `depth` is the aligned prediction, `gt` the exact depth, both (H, W) metres; `valid` (H, W) bool. An edge pair is
    one whose ground-truth log-depth differs by more than EDGE_LOG_JUMP; pairs within one pixel of an edge count.
    Abs_rel averages over every pixel, where smooth surfaces dominate; this isolates what local-global is claimed to
    improve: sharp, correctly placed discontinuities.
    """
    import torch
    import torch.nn.functional as F

    log_pred, log_gt = depth.clamp(min=1e-6).log(), gt.clamp(min=1e-6).log()
    errors = []
    for dim in (-1, -2):
        d_pred, d_gt = log_pred.diff(dim=dim), log_gt.diff(dim=dim)
        pair_valid = valid.narrow(dim, 0, valid.shape[dim] - 1) & valid.narrow(dim, 1, valid.shape[dim] - 1)
        edge = (d_gt.abs() > EDGE_LOG_JUMP).float()[None, None]
        near = F.max_pool2d(edge, 3, stride=1, padding=1)[0, 0].bool() & pair_valid
        errors.append((d_pred - d_gt).abs()[near])
    values = torch.cat(errors)
    return float(values.mean()) if values.numel() else float("nan")


def evaluate_student(student, processor, samples) -> dict[str, float]:
    """abs_rel, delta1 (the demo's protocol) and edge_grad of a student on held-out generated scenes."""
    import torch

    from hf_distill.demo import EVAL_DEPTH_RANGE, evaluate_on_samples
    from hf_distill.evaluation.metrics import align_prediction
    from hf_distill.evaluation.predict import predict_depth_tensors

    metrics = evaluate_on_samples(student, processor, samples)
    student.eval()
    with torch.no_grad():
        predictions = predict_depth_tensors(student, processor, [s.image for s in samples])
    student.train()
    edges = []
    for sample, prediction in zip(samples, predictions):
        gt, valid = torch.from_numpy(sample.depth), torch.from_numpy(sample.valid)
        depth = align_prediction(prediction[None], gt[None], valid[None])[0].float()
        edges.append(edge_gradient_error(depth.clamp(*EVAL_DEPTH_RANGE), gt, valid))
    return {"abs_rel": metrics["abs_rel"], "delta1": metrics["delta1"], "edge_grad": float(np.nanmean(edges))}


def run_one(config: Configuration, seed: int, steps: int, eval_every: int, num_eval: int, workdir: str,
            common: tuple[str, ...] = ()) -> dict:
    """Train one student of `config` with `seed`; its metrics, evaluation curve and wall time."""
    import torch
    from transformers import TrainerCallback

    from hf_distill.demo import demo_eval_samples
    from hf_distill.training.cli import parse_distill_args
    from hf_distill.training.run import build_trainer

    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(workdir) / f"{config.name.replace(' ', '_').replace(',', '').replace('+', 'p')}_seed{seed}"
    argv = [*demo_run_argv(out, seed, steps), *common]
    # the configuration's own flags win over the common ones above (e.g. no crop's --min_region)
    argv += list(config.flags)
    trainer = build_trainer(*parse_distill_args(argv))
    student = trainer.accelerator.unwrap_model(trainer.model).student
    samples = demo_eval_samples(num_eval)
    curve_samples = samples[: max(num_eval // 3, 2)]
    curve: list[tuple[int, float]] = []

    class Curve(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % eval_every == 0 or state.global_step == steps:
                metrics = evaluate_student(student, trainer.processing_class, curve_samples)
                curve.append((state.global_step, metrics["abs_rel"]))

    trainer.add_callback(Curve())
    trainer.train()
    metrics = evaluate_student(student, trainer.processing_class, samples)
    return {"group": config.group, "config": config.name, "flags": list(config.flags), "seed": seed,
            "steps": steps, "metrics": metrics, "curve": curve, "wall_time_s": time.perf_counter() - started}


def summarize(runs: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per configuration: metric -> (mean, standard deviation, number of seeds)."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for name in dict.fromkeys(r["config"] for r in runs):
        rows = [r["metrics"] for r in runs if r["config"] == name]
        table[name] = {}
        for metric in rows[0]:
            values = np.array([row[metric] for row in rows], dtype=float)
            sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            table[name][metric] = (float(values.mean()), sd, len(values))
    return table


def verdict(a: tuple[float, float, int], b: tuple[float, float, int]) -> str:
    """'real' when |mean difference| exceeds two standard errors of the difference, else no difference."""
    (ma, sa, na), (mb, sb, nb) = a, b
    se = math.sqrt(sa**2 / na + sb**2 / nb) if na > 1 and nb > 1 else float("nan")
    if not math.isfinite(se):
        return "one seed: no verdict"
    return f"{ma - mb:+.4f} ({'real' if abs(ma - mb) > 2 * se else 'no difference at this scale'})"


def markdown(runs: list[dict], teacher: dict[str, float]) -> str:
    table = summarize(runs)

    def cell(name: str, metric: str) -> str:
        if name not in table:
            return "-"
        mean, sd, n = table[name][metric]
        return f"{mean:.4f} ± {sd:.4f}" if n > 1 else f"{mean:.4f}"

    seeds = max(v["abs_rel"][2] for v in table.values())
    lines = [f"Seeds per configuration: {seeds}; mean ± standard deviation over seeds. Differences are against the "
             "reference row of each table; 'real' = larger than two standard errors of the difference.", ""]
    lines += ["**Table 2 (contexts)**, hybrid normalisation:", "",
              "| contexts | abs_rel | delta1 | edge_grad | abs_rel vs SC+LG |", "|---|---|---|---|---|"]
    for name in ("no crop", "LG", "SC", "SC+LG"):
        versus = verdict(table[name]["abs_rel"], table["SC+LG"]["abs_rel"]) if name in table and "SC+LG" in table \
            and name != "SC+LG" else ""
        lines.append(f"| {name} | {cell(name, 'abs_rel')} | {cell(name, 'delta1')} | {cell(name, 'edge_grad')} | "
                     f"{versus} |")
    lines += ["", "**Table 1 (normalisation)**, abs_rel (edge_grad), difference against hybrid in the same column:", "",
              "| normalisation | SC | LG | SC vs hybrid | LG vs hybrid |", "|---|---|---|---|---|"]
    for norm in ("global", "none", "local", "hybrid"):
        sc, lg = ("SC", "LG") if norm == "hybrid" else (f"SC {norm}", f"LG {norm}")
        cells = [f"{cell(n, 'abs_rel')} ({cell(n, 'edge_grad')})" for n in (sc, lg)]
        versus = ["" if norm == "hybrid" or n not in table or ref not in table else
                  verdict(table[n]["abs_rel"], table[ref]["abs_rel"]) for n, ref in ((sc, "SC"), (lg, "LG"))]
        lines.append(f"| {norm} | {cells[0]} | {cells[1]} | {versus[0]} | {versus[1]} |")
    lines += ["", "**HDN context families, auxiliary terms, student size** (SC+LG, hybrid):", "",
              "| configuration | abs_rel | delta1 | edge_grad | abs_rel vs SC+LG (dr) |", "|---|---|---|---|---|"]
    for name in ("SC+LG", "SC+LG dp", "SC+LG ds", "SC+LG without feat and grad",
                 "SC+LG, student of the teacher's size"):
        if name not in table:
            continue
        versus = "" if name == "SC+LG" else verdict(table[name]["abs_rel"], table["SC+LG"]["abs_rel"])
        lines.append(f"| {name} | {cell(name, 'abs_rel')} | {cell(name, 'delta1')} | {cell(name, 'edge_grad')} | "
                     f"{versus} |")
    lines.append(f"| teacher (demo-teacher) | {teacher['abs_rel']:.4f} | {teacher['delta1']:.4f} | "
                 f"{teacher['edge_grad']:.4f} | |")
    return "\n".join(lines) + "\n"


def chart(runs: list[dict], teacher: dict[str, float], path: Path) -> None:
    """abs_rel per configuration (mean, error bar = standard deviation) and the mean evaluation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(runs)
    names = list(table)
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    means = [table[n]["abs_rel"][0] for n in names]
    sds = [0.0 if math.isnan(table[n]["abs_rel"][1]) else table[n]["abs_rel"][1] for n in names]
    bars.bar(range(len(names)), means, yerr=sds, capsize=3, color="tab:blue")
    bars.axhline(teacher["abs_rel"], color="tab:red", linestyle="--", label="teacher")
    bars.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    bars.set_ylabel("abs_rel (held-out generated scenes)")
    bars.set_ylim(min(means + [teacher["abs_rel"]]) * 0.8, max(m + s for m, s in zip(means, sds)) * 1.05)
    bars.legend()
    for name in names:
        curve = np.array([[step, value] for r in runs if r["config"] == name for step, value in r["curve"]])
        steps = np.unique(curve[:, 0])
        curves.plot(steps, [curve[curve[:, 0] == s, 1].mean() for s in steps], label=name, linewidth=1)
    curves.set_xlabel("step")
    curves.set_ylabel("abs_rel (curve subset)")
    curves.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("output/ablation"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--num_eval_scenes", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--quick", action="store_true", help="2 configurations, 1 seed, 6 steps at batch 4, 4 scenes")
    args = parser.parse_args()
    grid, seeds, steps, eval_every, num_eval = GRID, args.seeds, args.steps, args.eval_every, args.num_eval_scenes
    common: tuple[str, ...] = ()
    if args.quick:
        grid, seeds, steps, eval_every, num_eval = QUICK, 1, 6, 3, 4
        common = ("--per_device_train_batch_size", "4", "--num_generated_scenes", "24")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    workdir = args.output_dir / "runs"

    started = time.perf_counter()
    jobs = [(config, seed) for seed in range(seeds) for config in grid]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker) as pool:
        futures = [pool.submit(run_one, c, s, steps, eval_every, num_eval, str(workdir), common) for c, s in jobs]
        runs = []
        for future in futures:
            runs.append(future.result())
            r = runs[-1]
            print(f"{r['config']:<40} seed {r['seed']}  abs_rel {r['metrics']['abs_rel']:.4f}  "
                  f"delta1 {r['metrics']['delta1']:.4f}  edge_grad {r['metrics']['edge_grad']:.4f}  "
                  f"{r['wall_time_s']:.0f} s", flush=True)
    wall = time.perf_counter() - started

    from hf_distill.demo import demo_eval_samples
    from hf_distill.models import load_depth_model, load_image_processor

    teacher = evaluate_student(load_depth_model("demo-teacher"), load_image_processor("demo-student"),
                               demo_eval_samples(num_eval))
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "workers": args.workers},
              "wall_time_s": wall, "seeds": seeds, "steps": steps, "teacher": teacher, "runs": runs}
    (args.output_dir / "ablation.json").write_text(json.dumps(report, indent=1))
    table = markdown(runs, teacher)
    (args.output_dir / "ablation.md").write_text(table)
    chart(runs, teacher, args.output_dir / "ablation.png")
    print(table)
    print(f"{len(runs)} runs in {wall / 60:.1f} min; outputs in {args.output_dir}/ (ablation.json, ablation.md, "
          "ablation.png)")


if __name__ == "__main__":
    main()
