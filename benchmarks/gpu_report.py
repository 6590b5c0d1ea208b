"""The GPU suite's figures and report: the devices' bf16 peaks, each case's summary and MFU, the Markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_timer import StepTimer

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets. Matched against
# torch.cuda.get_device_name() case-insensitively, first match wins (GH200 before H200, L40S before L40 before L4).
PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("H100", "PCIE"), "H100 PCIe", 756.0),
    (("H100", "NVL"), "H100 NVL", 835.0),
    (("H100",), "H100 SXM", 989.4),
    (("GH200",), "GH200", 989.4),
    (("H200", "NVL"), "H200 NVL", 835.0),
    (("H200",), "H200 SXM", 989.4),
    (("B200",), "B200", 2250.0),
    (("A100",), "A100", 312.0),
    (("L40S",), "L40S", 362.05),
    (("L40",), "L40", 181.05),
    (("L4",), "L4", 121.0),
    (("RTX 4090",), "RTX 4090", 165.2),
    (("MI300X",), "MI300X", 1307.4),
)

PARTS = ("data", "teacher", "student", "loss", "optimizer", "other")
PART_TITLES = {
    "data": "data", "teacher": "teacher fwd", "student": "student fwd+bwd", "loss": "loss fwd+bwd",
    "optimizer": "optimizer", "other": "other",
}


def lookup_peak(device_name: str) -> tuple[str, float] | None:
    """(label, dense bf16 TFLOP/s) of the first ``PEAK_BF16_TFLOPS`` entry whose substrings all occur in
    ``device_name``, or None for a device the table does not know."""
    name = device_name.upper()
    for keys, label, tflops in PEAK_BF16_TFLOPS:
        if all(key.upper() in name for key in keys):
            return label, tflops
    return None



def summarise(timer: StepTimer, weights: list[float], batch_size: int, processes: int,
              project_steps: int) -> dict[str, Any]:
    """The case's figures from the timer's steps (see the module docstring for the formulas)."""
    clean = [s for s in timer.steps if s["phase"] == "clean"]
    by_teacher = [[s["step_s"] for s in clean if s["teacher"] == i] for i in range(len(weights))]
    missing = [i for i, times in enumerate(by_teacher) if not times]
    step_by_teacher = [float(np.median(times)) if times else None for times in by_teacher]
    if missing:  # a teacher drawn in no clean step: the mean over the clean steps stands in
        expected_step_s = float(np.mean([s["step_s"] for s in clean]))
    else:
        expected_step_s = sum(w * t for w, t in zip(weights, step_by_teacher))
    counted = [timer.counted.get(i) for i in range(len(weights))]  # None for compiled cases (not counted)
    complete = all(c is not None for c in counted)
    flops = sum(w * c["flops"] for w, c in zip(weights, counted)) if complete else None
    instrumented = [s for s in timer.steps if s["phase"] == "instrumented"]
    parts = {p: float(np.mean([s["parts_s"][p] for s in instrumented])) for p in PARTS}
    total = sum(parts.values())
    return {
        "warmup_s": timer.warmup_s,
        "clean_steps": [{"teacher": s["teacher"], "step_s": s["step_s"], "data_wait_s": s["data_wait_s"]}
                        for s in clean],
        "step_s_by_teacher": step_by_teacher,
        "teachers_not_timed": missing,
        "expected_step_s": expected_step_s,
        "steps_per_second": 1.0 / expected_step_s,
        "images_per_second": batch_size * processes / expected_step_s,
        "data_wait_share": sum(s["data_wait_s"] for s in clean) / sum(s["step_s"] for s in clean),
        "counted_by_teacher": counted,
        "flops_per_step": flops,
        "host_syncs_per_step": sum(w * c["host_syncs"] for w, c in zip(weights, counted)) if complete else None,
        "instrumented_step_s": total,
        "parts_s": parts,
        "fractions": {p: value / total for p, value in parts.items()},
        "projected_steps": project_steps,
        "projected_wall_s": project_steps * expected_step_s,
    }


def add_mfu(cases: list[dict[str, Any]], peak_tflops: float | None) -> None:
    """Model FLOPs of a step are those counted without activation checkpointing (whose recomputation is not model
    work) and without compilation (which the counter cannot see), per number of processes; MFU = model FLOPs /
    expected step time / peak."""
    for case in cases:
        if case["status"] != "ok":
            continue
        counted = [c["flops_per_step"] for c in cases if c["status"] == "ok" and c["processes"] == case["processes"]
                   and c["flops_per_step"] and not c["activation_checkpointing"] and not c["torch_compile"]]
        flops = counted[0] if counted else None
        case["model_flops_per_step"] = flops
        achieved = flops / case["expected_step_s"] / 1e12 if flops else None
        case["model_tflops_per_second"] = achieved
        case["mfu"] = achieved / peak_tflops if achieved is not None and peak_tflops else None


def flop_formula(case: dict[str, Any]) -> str:
    """MFU written out with the case's numbers (per device)."""
    counted, weights = case["counted_by_teacher"], case["teacher_weights"]
    if case["model_flops_per_step"] is None or any(c is None for c in counted):
        return f"{case['name']}: FLOPs not counted"
    terms = " + ".join(f"{w:g} x {counted[i]['flops'] / 1e12:.4g}" for i, w in enumerate(weights))
    times = " + ".join(f"{w:g} x {case['step_s_by_teacher'][i]:.4g}" for i, w in enumerate(weights)
                       if case["step_s_by_teacher"][i] is not None)
    split = "; ".join(f"{name}: teacher fwd {counted[i]['teacher_flops'] / 1e12:.4g}, student and loss "
                      f"{(counted[i]['flops'] - counted[i]['teacher_flops']) / 1e12:.4g}"
                      for i, name in enumerate(case["teachers"]))
    mfu = "unknown peak" if case["mfu"] is None else f"{case['mfu']:.2%}"
    return (f"{case['name']}: F = {terms} = {case['model_flops_per_step'] / 1e12:.4g} TFLOP per step and device "
            f"({split}); t = {times} = {case['expected_step_s']:.4g} s; MFU = F / t / peak = {mfu}")


def markdown_table(report: dict[str, Any]) -> str:
    """The cases as one markdown table, then the MFU arithmetic and the split of the instrumented step."""
    heading = (f"Device: {report['device']} x {report['device_count']}; bf16 peak "
               f"{report['peak_bf16_tflops'] or 'unknown'} TFLOP/s ({report['peak_source']}); torch "
               f"{report['torch']}, transformers {report['transformers']}.")
    if report["tiny"]:
        heading = "**CPU smoke run of tiny stand-ins: not a measurement.** " + heading
    settings = report["settings"]
    columns = ["case", "procs", "steps/s", "images/s", "step s by teacher", "TFLOP/step/dev", "MFU",
               "peak GiB per device", "host syncs/step", "data wait", f"{settings['project_steps']} steps",
               "warm-up s"]
    lines = [
        heading, "",
        f"`{report['command']}`: recipe `{settings['recipe']}`, global view + {settings['num_local_patches']} "
        f"patches at {settings['size']}, batch {settings['batch_size']} per device, "
        f"{settings['dataloader_num_workers']} loader workers, steps {' '.join(report['plan']['phases'])}.", "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for case in report["cases"]:
        if case["status"] != "ok":
            lines.append("| " + " | ".join([case["name"], str(case.get("processes", "")), case["status"],
                                            *[""] * (len(columns) - 3)]) + " |")
            continue
        by_teacher = ", ".join("-" if t is None else f"{t:.3f}" for t in case["step_s_by_teacher"])
        flops, mfu, syncs = case["model_flops_per_step"], case["mfu"], case["host_syncs_per_step"]
        cells = [
            case["name"], str(case["processes"]), f"{case['steps_per_second']:.3f}",
            f"{case['images_per_second']:.2f}", by_teacher, "-" if flops is None else f"{flops / 1e12:.4g}",
            "-" if mfu is None else f"{mfu:.1%}",
            ", ".join(f"{m:.2f}" for m in case["peak_memory_gib_per_device"]),
            "-" if syncs is None else f"{syncs:g}", f"{case['data_wait_share']:.1%}",
            f"{case['projected_wall_s'] / 3600:.2f} h", f"{case['warmup_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ok = [case for case in report["cases"] if case["status"] == "ok"]
    lines += ["", "MFU per device (t_i: median clean step time when teacher i is drawn, F_i: FLOPs of such a step):"]
    lines += [f"- {flop_formula(case)}" for case in ok]
    lines += ["", "Instrumented step split (synchronised timers, mean over the instrumented steps):", "",
              "| case | " + " | ".join(PART_TITLES[p] for p in PARTS) + " |", "|---|" + "---|" * len(PARTS)]
    for case in ok:
        lines.append(f"| {case['name']} | " + " | ".join(
            f"{case['parts_s'][p] * 1000:.1f} ms ({case['fractions'][p]:.0%})" for p in PARTS) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], output_dir: Path) -> None:
    """Write ``gpu_suite.json`` and ``gpu_suite.md`` into ``output_dir``."""
    (output_dir / "gpu_suite.json").write_text(json.dumps(report, indent=2))
    (output_dir / "gpu_suite.md").write_text(markdown_table(report))
