"""Does the mechanism work? The paper's mechanisms tested with teachers whose flaws we chose (oracle teachers).

    python -m benchmarks.mechanisms                    # free-map student: 25 setups x 5 seeds (about 30 min, 2 cores)
    python -m benchmarks.mechanisms --student network  # the demo network student: 13 setups x 5 seeds (about 23 min)
    python -m benchmarks.mechanisms --quick            # every setup, 1 seed, 2 steps (the test suite runs it)
    python -m benchmarks.mechanisms --output_dir DIR --seeds 5 --steps 150 --workers 2
    python -m benchmarks.mechanisms --student network --only exact --seeds 1 --extra_flags "--global_crop_size 224"

Every run is the demo recipe (`--config demo`, generated 224x224 scenes, regions of 112 to 224 pixels, as
`benchmarks/ablation.py`) with an oracle teacher (`hf_distill.oracle`: the exact disparity of each view, degraded by
chosen flaws), trained through the real `DistillationTrainer`. Two students: `free_map` (benchmarks/free_map.py: a
learnable map per training scene, no floor; scored on its training scenes' full views) and `network` (the random demo
student; scored on held-out scenes). Metrics: abs_rel, delta1, edge_grad (the ablation bench's), edge_abs_rel (abs_rel
within 2 pixels of a depth edge), abs_rel_far / abs_rel_near (beyond / before the bias split), all after the
whole-image disparity alignment. Teachers are scored the same way on the same full views. Verdicts use the ablation
bench's rule (`ablation.verdict`: real when over two standard errors; a teacher is deterministic, standard error 0).
The predictions below were written before each student's first full run.

A prediction about a flaw is testable only where the flawed teacher is worse, on the prediction's metric, than the
student trained by the flawless oracle (setup `exact`, the student's floor): a flaw smaller than the student's own
error can be neither inherited nor averaged away ("untestable at this scale"). Resolution-limited teachers without a
student (`LADDER`) place the floor: "as accurate as exact depth seen at R x R pixels".
Writes mechanisms.json (`student`, `seeds`, `floor`, `predictions` with verdicts and numbers, `teachers`, every run),
mechanisms.md and mechanisms.png; runs.jsonl keeps every finished run, so the same command resumes a stopped bench.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.ablation import EDGE_LOG_JUMP, LG_ONLY, SC_ONLY, edge_gradient_error, summarize, verdict
from benchmarks.demo_runs import SCENE_SIDE, demo_run_argv, init_worker
from benchmarks.mechanisms_chart import chart

SPLIT = 3.0  # metres: the regional-bias teachers' boundary
RESOLUTION = "oracle:resolution=28"  # the teacher sees a 28 x 28 input: detail finer than view / 28 is lost
AFFINE = "oracle:affine=0.5"  # each view's disparity scaled by exp(0.5 u) and shifted by 0.5 v mean, u, v ~ U[-1, 1]
# Surfaces beyond / within 3 m pulled 80% of the way to the 3 m plane. Not all the way: with half a view on one plane,
# median/MAD normalisation degenerates (for the near teacher an exact student then scored no better than a constant).
FAR = f"oracle:bias=far:0.8,split={SPLIT:g}"
NEAR = f"oracle:bias=near:0.8,split={SPLIT:g}"
# Per-pixel disparity noise of 50%: the teacher (abs_rel 0.254) must be worse than the flawless-oracle student (0.218),
# else "the student beats its teacher" compares the student's floor, not the averaging (the first run used 0.2: 0.144).
NOISE = "oracle:noise=0.5"
# Teachers scored only (no student): exact depth seen at R x R pixels. The flawless-oracle student's floor is read
# against them as "as accurate as exact depth at R x R pixels".
LADDER = tuple(f"oracle:resolution={r}" for r in (2, 3, 4, 8, 16, 56))
# The free-map student: 4 training scenes, every one in every batch (a map is updated at every step, so Adam's moments
# see dense gradients); no gradient-matching term (on a free map its per-pixel pull made the exact-oracle map reach
# only abs_rel 0.25 in 100 steps against 0.04 without it), no feature term (no tokens), no output anchor (a map has no
# head to hold), a learning rate for log-disparity pixels, no weight decay.
# Base normalisation `global`: with `hybrid` the exact-oracle map converged far slower (abs_rel 0.107 after 200 steps,
# against 0.043 for `global` after 100); setups that name a normalisation use it.
FREE_MAP_SCENES = 4
FREE_MAP_STEPS = 150
FREE_MAP_FLAGS = ("--num_generated_scenes", str(FREE_MAP_SCENES), "--per_device_train_batch_size", str(FREE_MAP_SCENES),
                  "--lambda_grad", "0", "--lambda_feat", "0", "--lambda_anchor", "0", "--learning_rate", "0.02",
                  "--weight_decay", "0", "--normalization", "global")


@dataclass(frozen=True)
class Setup:
    group: str
    name: str
    teachers: tuple[str, ...]
    flags: tuple[str, ...] = ()


NETWORK_GRID = [
    Setup("reference", "exact", ("oracle",)),  # no flaw: the student's own floor at this training length
    Setup("resolution", "res SC", (RESOLUTION,), SC_ONLY),
    Setup("resolution", "res SC+LG", (RESOLUTION,)),
    *[Setup("affine", f"affine {context} {norm}", (AFFINE,), (*flags, "--normalization", norm))
      for context, flags in (("SC", SC_ONLY), ("LG", LG_ONLY)) for norm in ("none", "global", "hybrid")],
    Setup("bias", "far only", (FAR,)),
    Setup("bias", "near only", (NEAR,)),
    Setup("bias", "far+near", (FAR, NEAR)),
    Setup("noise", "noise SC+LG", (NOISE,)),
]
# The free-map student (benchmarks/free_map.py) has no floor: the same setups (its base normalisation is `global`, see
# FREE_MAP_FLAGS), plus the ablation rows that the network student's floor hid: normalisation strategies under the
# resolution and affine teachers, and HDN context families (hybrid) under the resolution teacher.
FREE_MAP_GRID = [
    *NETWORK_GRID,
    *[Setup("normalization", _name, (RESOLUTION,), (*flags, "--normalization", norm))
      for context, flags in (("SC", SC_ONLY), ("LG", LG_ONLY)) for norm in ("none", "global", "local", "hybrid")
      if (_name := f"res {context} {norm}") != "res SC global"],  # res SC is SC global
    *[Setup("normalization", f"affine {context} local", (AFFINE,), (*flags, "--normalization", "local"))
      for context, flags in (("SC", SC_ONLY), ("LG", LG_ONLY))],
    *[Setup("hdn", f"res SC+LG hybrid {variant}", (RESOLUTION,),
            ("--normalization", "hybrid", "--hdn_variant", variant))
      for variant in ("dr", "dp", "ds")],
]
GRIDS = {"free_map": FREE_MAP_GRID, "network": NETWORK_GRID}
NORMS = ("none", "global", "local", "hybrid")
PREDICTIONS = {
    "resolution": "resolution-limited teacher: SC+LG gives a lower edge error than SC alone, and the SC+LG student's "
                  "edge error is below its teacher's on full views",
    "affine": "affine-ambiguous teacher: `none` normalisation is clearly worse than `global` and `hybrid`, most of "
              "all under LG",
    "bias": "two teachers with complementary regional bias drawn per step beat either teacher alone, and the student "
            "is better than each teacher on that teacher's biased region (where the other teacher is right)",
    "noise": "noisy teacher: the student's error is below its teacher's",
    "normalization": "normalisation ablation (resolution-limited and affine teachers, SC and LG): `hybrid` is never "
                     "worse than `none`, `global` or `local` by a real difference",
    "hdn": "HDN context families (SC+LG, hybrid, resolution-limited teacher): neither `dp` nor `ds` is better than the "
           "default `dr` by a real difference (abs_rel, edge_abs_rel)",
}


@lru_cache(maxsize=2)
def _eval_samples(student: str, num_scenes: int):
    """What a student is scored on: held-out generated scenes (network), or the training scenes themselves (free
    map: a map per training scene, nothing to generalise)."""
    if student == "free_map":
        from benchmarks.free_map import training_scenes

        return training_scenes(num_scenes, SCENE_SIDE)
    from hf_distill.demo import demo_eval_samples

    return demo_eval_samples(num_scenes)


METRICS = ("abs_rel", "delta1", "edge_grad", "edge_abs_rel", "abs_rel_far", "abs_rel_near")


def edge_band(gt, width: int = 2):
    """(H, W) bool: pixels within `width` pixels of a ground-truth depth edge (a log-depth jump over EDGE_LOG_JUMP
    between neighbours, as `edge_gradient_error` defines edges)."""
    import torch
    import torch.nn.functional as F

    log_gt = gt.clamp(min=1e-6).log()
    edge = torch.zeros_like(gt, dtype=torch.bool)
    for dim in (-1, -2):
        jump = log_gt.diff(dim=dim).abs() > EDGE_LOG_JUMP
        edge.narrow(dim, 0, gt.shape[dim] - 1).logical_or_(jump)
        edge.narrow(dim, 1, gt.shape[dim] - 1).logical_or_(jump)
    return F.max_pool2d(edge[None, None].float(), 2 * width + 1, stride=1, padding=width)[0, 0].bool()


def score(predictions, samples) -> dict[str, float]:
    """`METRICS` of raw predictions (H, W): abs_rel and delta1 (the demo's protocol), edge_grad (the ablation
    bench's), and, after the same whole-image alignment, abs_rel within 2 pixels of a depth edge and beyond / before
    the bias split."""
    import torch

    from hf_distill.demo import EVAL_DEPTH_RANGE
    from hf_distill.evaluation.metrics import align_prediction, evaluate_depth

    rows = []
    for sample, prediction in zip(samples, predictions):
        gt, valid = torch.from_numpy(sample.depth), torch.from_numpy(sample.valid)
        metrics = evaluate_depth(prediction, gt, valid, alignment="disparity", min_depth=EVAL_DEPTH_RANGE[0],
                                 max_depth=EVAL_DEPTH_RANGE[1])
        depth = align_prediction(prediction[None], gt[None], valid[None])[0].float().clamp(*EVAL_DEPTH_RANGE)
        relative = (depth - gt).abs() / gt
        regions = (valid & edge_band(gt), valid & (gt > SPLIT), valid & (gt < SPLIT))
        rows.append([metrics["abs_rel"], metrics["delta1"], edge_gradient_error(depth, gt, valid),
                     *(float(relative[r].mean()) if r.any() else math.nan for r in regions)])
    return dict(zip(METRICS, map(float, np.nanmean(np.array(rows, dtype=float), axis=0))))


def score_teacher(spec: str, student: str, num_eval: int) -> dict[str, float]:
    """An oracle teacher on the full views the student is scored on (each view given whole, as the student's)."""
    import torch

    from hf_distill.teachers import build_teacher

    teacher, samples = build_teacher(spec), _eval_samples(student, num_eval)
    predictions = []
    for sample in samples:
        view = torch.from_numpy(np.asarray(sample.image, np.float32) / 255.0).permute(2, 0, 1)[None]
        predictions.append(teacher(view, depth=torch.from_numpy(sample.depth)[None])[0][0])
    return score(predictions, samples)


def run_setup(setup: Setup, seed: int, steps: int, num_eval: int, workdir: str, common: tuple[str, ...],
              student: str = "network") -> dict:
    """Train one student of `setup` with `seed` (the ablation bench's demo settings; for the free map also
    `FREE_MAP_FLAGS`); its metrics on the student's evaluation scenes (`_eval_samples`)."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(workdir) / f"{student}_{setup.name.replace(' ', '_').replace('+', 'p')}_seed{seed}"
    argv = [*demo_run_argv(out, seed, steps), "--teacher_models", *setup.teachers, *(FREE_MAP_FLAGS if student == "free_map" else ()), *common, *setup.flags]
    samples = _eval_samples(student, num_eval)
    if student == "free_map":
        from benchmarks.free_map import build_free_map_trainer, trained_maps

        trainer = build_free_map_trainer(argv)
        trainer.train()
        predictions = trained_maps(trainer)
    else:
        from hf_distill.evaluation.predict import predict_depth_tensors
        from hf_distill.training.cli import parse_distill_args
        from hf_distill.training.run import build_trainer

        trainer = build_trainer(*parse_distill_args(argv))
        trainer.train()
        network = trainer.accelerator.unwrap_model(trainer.model).student.eval()
        with torch.no_grad():
            predictions = predict_depth_tensors(network, trainer.processing_class, [s.image for s in samples])
    return {"student": student, "group": setup.group, "config": setup.name, "teachers": list(setup.teachers),
            "flags": list(setup.flags), "seed": seed, "steps": steps, "metrics": score(predictions, samples),
            "wall_time_s": time.perf_counter() - started}


def _compare(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[bool | None, str]:
    """Whether a is lower than b by a real difference (None: one seed, no verdict), and the ablation verdict."""
    text = verdict(a, b)
    if text.startswith("one seed"):
        return None, text
    return a[0] < b[0] and text.endswith("(real)"), text


def _fixed(value: float, n: int) -> tuple[float, float, int]:
    """A deterministic teacher's value as (mean, sd, n) for `verdict`: no spread."""
    return value, 0.0, n


def _row(teacher: str, context: str, norm: str) -> str:
    """The setup name of a (teacher, context, normalisation) cell of the free-map grid (its `res SC` is SC global)."""
    return "res SC" if (teacher, context, norm) == ("res", "SC", "global") else f"{teacher} {context} {norm}"


def judge(runs: list[dict], teachers: dict[str, dict[str, float]], student: str = "network") -> list[dict]:
    """Each prediction's verdict and the numbers behind it, each naming the `student` it was judged on.

    Verdicts: "held" / "not held" by the ablation rule; "untestable at this scale" when a flawed teacher is not worse
    than the flawless-oracle student (the student's floor) on the metric the prediction is about: a student cannot
    inherit, average away or be rescued from a flaw smaller than its own error, so the comparison would measure the
    floor, not the mechanism; "no verdict" with one seed.
    """
    table = summarize(runs)
    n = max(v["abs_rel"][2] for v in table.values())
    checks: dict[str, list[tuple[str, tuple, tuple]]] = {}
    diagnostics: dict[str, list[tuple[str, tuple, tuple]]] = {}
    gates: dict[str, list[tuple[str, tuple, tuple]]] = {}  # (label, floor, teacher): testable when floor < teacher
    floor = table.get("exact")

    def gate(group: str, metric: str, spec: str) -> None:
        if floor is not None:
            gates.setdefault(group, []).append(
                (f"testable: exact-oracle student {metric} < teacher {spec} {metric}", floor[metric],
                 _fixed(teachers[spec][metric], n)))

    if {"res SC", "res SC+LG"} <= table.keys():
        # Judged on abs_rel within 2 pixels of an edge: edge_grad is not monotonic in blur (README), edge_abs_rel is.
        checks["resolution"] = [
            ("edge_abs_rel SC+LG < SC", table["res SC+LG"]["edge_abs_rel"], table["res SC"]["edge_abs_rel"]),
            ("edge_abs_rel SC+LG < teacher", table["res SC+LG"]["edge_abs_rel"],
             _fixed(teachers[RESOLUTION]["edge_abs_rel"], n))]
        diagnostics["resolution"] = [
            ("edge_grad SC+LG < SC", table["res SC+LG"]["edge_grad"], table["res SC"]["edge_grad"]),
            ("edge_grad SC+LG < teacher", table["res SC+LG"]["edge_grad"],
             _fixed(teachers[RESOLUTION]["edge_grad"], n))]
        gate("resolution", "edge_abs_rel", RESOLUTION)
    if all(f"affine {c} {m}" in table for c in ("SC", "LG") for m in ("none", "global", "hybrid")):
        # Not gated: the flaw acts only through training (alignment removes it from the teacher's own score), and the
        # prediction compares normalisations of students that share one floor.
        checks["affine"] = [(f"abs_rel {c} {m} < {c} none", table[f"affine {c} {m}"]["abs_rel"],
                             table[f"affine {c} none"]["abs_rel"]) for c in ("SC", "LG") for m in ("global", "hybrid")]
    if {"far only", "near only", "far+near"} <= table.keys():
        mix = table["far+near"]
        if floor is not None:
            diagnostics["bias"] = [("abs_rel far+near < exact-oracle student", mix["abs_rel"], floor["abs_rel"])]
        checks["bias"] = [("abs_rel far+near < far only", mix["abs_rel"], table["far only"]["abs_rel"]),
                          ("abs_rel far+near < near only", mix["abs_rel"], table["near only"]["abs_rel"]),
                          ("abs_rel_far far+near < far teacher", mix["abs_rel_far"],
                           _fixed(teachers[FAR]["abs_rel_far"], n)),
                          ("abs_rel_near far+near < near teacher", mix["abs_rel_near"],
                           _fixed(teachers[NEAR]["abs_rel_near"], n))]
        gate("bias", "abs_rel_far", FAR)
        gate("bias", "abs_rel_near", NEAR)
    if "noise SC+LG" in table:
        checks["noise"] = [("abs_rel student < teacher", table["noise SC+LG"]["abs_rel"],
                            _fixed(teachers[NOISE]["abs_rel"], n))]
        if floor is not None:  # noise averaged away: level with the exact-oracle student?
            diagnostics["noise"] = [("abs_rel noise student < exact-oracle student", table["noise SC+LG"]["abs_rel"],
                                     floor["abs_rel"])]
        gate("noise", "abs_rel", NOISE)
    # Ablation rows, not gated (students of one teacher that share one floor, compared with each other).
    cells = [(t, c, m) for t in ("res", "affine") for c in ("SC", "LG") for m in NORMS]
    if all(_row(*cell) in table for cell in cells):
        checks["normalization"] = [
            (f"not worse: abs_rel {t} {c} hybrid vs {m}", table[_row(t, c, "hybrid")]["abs_rel"],
             table[_row(t, c, m)]["abs_rel"]) for t, c, m in cells if m != "hybrid"]
    if all(f"res SC+LG hybrid {v}" in table for v in ("dr", "dp", "ds")):
        checks["hdn"] = [(f"not worse: {m} res SC+LG hybrid dr vs {v}", table["res SC+LG hybrid dr"][m],
                          table[f"res SC+LG hybrid {v}"][m]) for m in ("abs_rel", "edge_abs_rel") for v in ("dp", "ds")]

    def compared(items: list[tuple[str, tuple, tuple]], suffix: str = "") -> tuple[dict, list[bool | None]]:
        numbers, outcomes = {}, []
        for label, a, b in items:
            if label.startswith("not worse"):  # held unless b is lower than a by a real difference
                lower, text = _compare(b, a)
                held, text = (None if lower is None else not lower), verdict(a, b)
            else:
                held, text = _compare(a, b)
            outcomes.append(held)
            numbers[label + suffix] = {"a": a[0], "a_sd": a[1], "b": b[0], "b_sd": b[1], "verdict": text, "held": held}
        return numbers, outcomes

    predictions = []
    for group, items in checks.items():
        gate_numbers, testable = compared(gates.get(group, []))
        numbers, outcomes = compared(items)
        numbers.update(compared(diagnostics.get(group, []), " (diagnostic)")[0])
        if group == "affine":  # "most of all under LG": the gap to the better of global and hybrid is larger
            best = {c: min(table[f"affine {c} {m}"]["abs_rel"][0] for m in ("global", "hybrid")) for c in ("SC", "LG")}
            gaps = {c: table[f"affine {c} none"]["abs_rel"][0] - best[c] for c in ("SC", "LG")}
            numbers["gap none - best, SC"], numbers["gap none - best, LG"] = gaps["SC"], gaps["LG"]
            outcomes.append(None if None in outcomes else gaps["LG"] > gaps["SC"])
        if None in outcomes or None in testable:
            result = "no verdict"
        elif not all(testable):
            result = "untestable at this scale"
        else:
            result = "held" if all(outcomes) else "not held"
        predictions.append({"student": student, "group": group, "prediction": PREDICTIONS[group], "verdict": result,
                            "numbers": {**gate_numbers, **numbers}})
    return predictions


def floor_equivalent(floor: dict[str, float], ladder: dict[str, dict[str, float]]) -> str | None:
    """The ladder teacher (exact depth seen at R x R pixels) whose abs_rel is nearest the flawless-oracle student's."""
    if not ladder:
        return None
    return min(ladder, key=lambda spec: abs(ladder[spec]["abs_rel"] - floor["abs_rel"]))


def floor_report(runs: list[dict], teachers: dict[str, dict[str, float]]) -> dict | None:
    """The flawless-oracle student's mean metrics and the ladder teacher it equals (None without the `exact` setup)."""
    exact = summarize(runs).get("exact")
    if exact is None:
        return None
    floor = {metric: value[0] for metric, value in exact.items()}
    ladder = {spec: teachers[spec] for spec in LADDER if spec in teachers}
    return {"metrics": floor, "equivalent_teacher": floor_equivalent(floor, ladder)}


def markdown(runs: list[dict], teachers: dict[str, dict[str, float]], predictions: list[dict],
             floor: dict | None, student: str = "network") -> str:
    """The setups' and teachers' table, the floor's place on the ladder (``floor_report``) and the verdicts."""
    table = summarize(runs)
    metrics = METRICS
    seeds = max(v["abs_rel"][2] for v in table.values())
    scenes = "training scenes (full views)" if student == "free_map" else "held-out views"
    lines = [f"Student: `{student}`. Seeds per setup: {seeds}; mean ± standard deviation over seeds. Teachers are "
             f"scored on the same {scenes} (deterministic).", "",
             "| setup | teachers | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for setup in GRIDS[student]:
        if setup.name not in table:
            continue
        cells = []
        for metric in metrics:
            mean, sd, count = table[setup.name][metric]
            cells.append(f"{mean:.4f} ± {sd:.4f}" if count > 1 else f"{mean:.4f}")
        lines.append(f"| {setup.name} | {' + '.join(f'`{t}`' for t in setup.teachers)} | " + " | ".join(cells) + " |")
    for spec, values in teachers.items():
        lines.append(f"| teacher | `{spec}` | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    if floor is not None and floor["equivalent_teacher"] is not None:
        values, rung = floor["metrics"], floor["equivalent_teacher"]
        side = rung.rpartition("=")[2]
        lines += ["", f"The flawless-oracle `{student}` student (the floor: abs_rel {values['abs_rel']:.4f}, "
                      f"edge_abs_rel {values['edge_abs_rel']:.4f}) is about as accurate as exact depth seen at "
                      f"{side} x {side} pixels (`{rung}`: abs_rel {teachers[rung]['abs_rel']:.4f}, edge_abs_rel "
                      f"{teachers[rung]['edge_abs_rel']:.4f}). A prediction about a flaw smaller than the floor is "
                      "untestable at this scale."]
    lines += ["", "| prediction | verdict | numbers (a vs b: difference, rule) |", "|---|---|---|"]
    for p in predictions:
        parts = [f"{k}: {v['a']:.4f} vs {v['b']:.4f}, {v['verdict']}" if isinstance(v, dict) else f"{k}: {v:+.4f}"
                 for k, v in p["numbers"].items()]
        lines.append(f"| {p['prediction']} | **{p['verdict']}** | {'; '.join(parts)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", choices=tuple(GRIDS), default="free_map",
                        help="free_map: a learnable map per training scene (no floor); network: the demo student")
    parser.add_argument("--output_dir", type=Path, default=None, help="default output/mechanisms/STUDENT")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help=f"default {FREE_MAP_STEPS} (free map), 200 (network)")
    parser.add_argument("--num_generated_scenes", type=int, default=128, help="network student's training scenes")
    parser.add_argument("--num_eval_scenes", type=int, default=24, help="network student's held-out scenes")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--quick", action="store_true", help="every setup, 1 seed, 2 steps at batch 2, 4 scenes")
    parser.add_argument("--only", nargs="+", default=None, metavar="SETUP",
                        help="run only these setups of the grid (e.g. exact); predictions lacking a setup are untested")
    parser.add_argument("--extra_flags", default="", metavar="'FLAGS'",
                        help="training flags added to every run, in one quoted string (e.g. \"--global_crop_size 224\"); "
                             "they win over the demo's flags")
    args = parser.parse_args()
    student, grid = args.student, GRIDS[args.student]
    if args.only:
        unknown = sorted(set(args.only) - {setup.name for setup in grid})
        if unknown:
            parser.error(f"--only: unknown setups {unknown}; {student} setups: {[setup.name for setup in grid]}")
        grid = [setup for setup in grid if setup.name in args.only]
    extra = tuple(shlex.split(args.extra_flags))
    output_dir = args.output_dir or Path("output/mechanisms") / student
    seeds, num_eval = args.seeds, args.num_eval_scenes
    steps = args.steps or (FREE_MAP_STEPS if student == "free_map" else 200)
    common: tuple[str, ...] = ("--num_generated_scenes", str(args.num_generated_scenes))
    if student == "free_map":  # the scenes are FREE_MAP_FLAGS's
        common, num_eval = (), FREE_MAP_SCENES
    if args.quick:
        seeds, steps = 1, 2
        if student == "network":
            num_eval, common = 4, ("--per_device_train_batch_size", "2", "--num_generated_scenes", "8")
    common = (*common, *extra)
    output_dir.mkdir(parents=True, exist_ok=True)
    workdir = output_dir / "runs"

    started = time.perf_counter()
    # Every finished run is appended to runs.jsonl; a rerun with the same settings reuses them (a stopped bench
    # resumes where it was).
    log = output_dir / "runs.jsonl"
    settings = {"student": student, "steps": steps, "common": list(common), "num_eval": num_eval}
    if student == "free_map":
        settings["flags"] = list(FREE_MAP_FLAGS)
    done, by_name = {}, {setup.name: setup for setup in grid}
    if log.is_file():
        for line in log.read_text().splitlines():
            run = json.loads(line)
            setup = by_name.get(run["config"])
            if run.get("settings") == settings and setup is not None and run["teachers"] == list(setup.teachers):
                done[(run["config"], run["seed"])] = run
    jobs = [(setup, seed) for seed in range(seeds) for setup in grid if (setup.name, seed) not in done]
    runs = [done[(s.name, seed)] for seed in range(seeds) for s in grid if (s.name, seed) in done]
    if runs:
        print(f"{len(runs)} runs reused from {log}", flush=True)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker) as pool:
        futures = [pool.submit(run_setup, s, seed, steps, num_eval, str(workdir), common, student)
                   for s, seed in jobs]
        for future in futures:
            runs.append({**future.result(), "settings": settings})
            with log.open("a") as stream:
                stream.write(json.dumps(runs[-1]) + "\n")
            r, m = runs[-1], runs[-1]["metrics"]
            print(f"{r['config']:<20} seed {r['seed']}  abs_rel {m['abs_rel']:.4f}  delta1 {m['delta1']:.4f}  "
                  f"edge_grad {m['edge_grad']:.4f}  edge_abs_rel {m['edge_abs_rel']:.4f}  "
                  f"far {m['abs_rel_far']:.4f}  near {m['abs_rel_near']:.4f}  "
                  f"{r['wall_time_s']:.0f} s", flush=True)
    wall = time.perf_counter() - started

    specs = dict.fromkeys([*(t for s in GRIDS[student] for t in s.teachers), *LADDER])  # all: the chart names them
    teachers = {spec: score_teacher(spec, student, num_eval) for spec in specs}
    predictions = judge(runs, teachers, student)
    floor = floor_report(runs, teachers)
    machine = platform.processor() or platform.machine()
    report = {"student": student, "machine": {"cpus": os.cpu_count(), "processor": machine, "workers": args.workers},
              "wall_time_s": wall, "seeds": list(range(seeds)), "steps": steps, "settings": settings, "split_m": SPLIT,
              "floor": floor,
              "predictions": predictions, "teachers": teachers, "runs": runs}
    (output_dir / "mechanisms.json").write_text(json.dumps(report, indent=1))
    table = markdown(runs, teachers, predictions, floor, student)
    (output_dir / "mechanisms.md").write_text(table)
    chart(summarize(runs), teachers, output_dir / "mechanisms.png", {"far": FAR, "near": NEAR, "noise": NOISE,
                                                                      "resolution": RESOLUTION, "affine": AFFINE})
    print(table)
    for p in predictions:
        print(f"[{p['verdict'].upper()}] {p['prediction']}")
        for label, value in p["numbers"].items():
            print(f"    {label}: " + (f"{value['a']:.4f} vs {value['b']:.4f}, {value['verdict']}"
                                      if isinstance(value, dict) else f"{value:+.4f}"))
    print(f"{len(runs)} runs in {wall / 60:.1f} min; outputs in {output_dir}/ (mechanisms.json, mechanisms.md, "
          "mechanisms.png)")


if __name__ == "__main__":
    main()
