#!/usr/bin/env python
"""The GPU performance suite: the paper's recipe (``--config sa1b_multiteacher``) as it trains, in one command.

    python benchmarks/gpu_suite.py --output_dir output/gpu_suite            # 1 GPU, then all GPUs when several
    python benchmarks/gpu_suite.py --tiny --processes 2 --output_dir /tmp/s  # CPU: the same code, tiny stand-ins

What runs is ``scripts/distill.py --config sa1b_multiteacher`` as built by ``build_trainer``: Depth Anything V2
Large and GenPercept disparity (SD 2.1's UNet, VAE and text encoder) drawn 7:3 per step, a Depth Anything V2 Base
student, global view + 2 local patches at 560 (GenPercept processes them at 768), batch 8 per device, bf16
teachers and bf16 autocast, ``--dataloader_num_workers 8``, streamed webdataset shards laid out as SA-1B's
(``sa_N.jpg`` of 1500 x 2250 + ``sa_N.json``). Weights are random (built from constants: no download); only
saving, logging and visualisation are moved out of the timed steps. With several GPUs the same case runs again
on all of them through ``accelerate launch`` (DDP), one shard per reader (ranks x workers).

Steps of each case, drawn teacher by drawn teacher (the draws are the trainer's own, known in advance):
  warm-up       until --warmup_steps have run and every teacher has run once (reported as warmup_s)
  count         until every teacher has been drawn once: FLOPs (``FlopCounterMode``, teacher forward counted
                apart) and host synchronisations inside ``training_step`` (``hf_distill.testing.host_syncs``)
  clean         one device synchronisation per step (at its end): step time per teacher, and the time the host
                waits for the loader's next batch (data-loader wait share = wait / step time)
  instrumented  synchronised timers split each step into data, teacher fwd, student fwd+bwd, loss fwd+bwd,
                optimizer and other (the rest of the Trainer loop)

Figures (per case): expected step time t = sum_i w_i t_i over the teachers' sampling weights w_i and their clean
step times t_i; steps/s = 1 / t; images/s = batch x processes / t; FLOPs per step F = sum_i w_i F_i per device;
MFU = F / t / the device's dense bf16 peak (PEAK_BF16_TFLOPS, or --peak_tflops); projected wall time of
--project_steps (the recipe's 20k) steps = that many x t, without evaluation, checkpoints and logging. Peak
memory per device: ``torch.cuda.max_memory_allocated`` of each rank (CPU: the process's max RSS).
gpu_suite.json and gpu_suite.md are rewritten after every case. Exit status 1 when a case failed.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
import transformers
from accelerate.utils import is_compiled_module
from PIL import Image
from torch.utils import flop_counter
from transformers import TrainerCallback

from hf_distill.data.synthetic import render_scene
from hf_distill.data.views import check_crop_size
from hf_distill.models import default_image_processor, depth_config, load_depth_model, tiny_depth_config
from hf_distill.testing.genpercept import write_genpercept_folder
from hf_distill.testing.host_syncs import count_host_syncs
from hf_distill.training.cli import load_config_file, parse_distill_args
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.run import build_trainer
from hf_distill.training.trainer import DistillationTrainer

RECIPE = "sa1b_multiteacher"  # a shipped recipe, by name

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
SA1B_IMAGE_SIZE = (1500, 2250)  # SA-1B's images are about 1500 x 2250 (height x width)


def lookup_peak(device_name: str) -> tuple[str, float] | None:
    """(label, dense bf16 TFLOP/s) of the first ``PEAK_BF16_TFLOPS`` entry whose substrings all occur in
    ``device_name``, or None for a device the table does not know."""
    name = device_name.upper()
    for keys, label, tflops in PEAK_BF16_TFLOPS:
        if all(key.upper() in name for key in keys):
            return label, tflops
    return None


def _register_cpu_sdpa_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel SDPA takes on CPU (torch 2.13):
    give it the same formulas, so the CPU smoke run counts attention like a GPU run does."""
    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop(q, k, v)
        )
    if backward not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(backward)(
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop(grad, q, k, v)
        )


def teacher_draws(seed: int, probabilities: list[float], steps: int) -> list[int]:
    """The teacher index ``DistillationTrainer._draw_teacher`` gives at each of the first ``steps`` steps."""
    state = SimpleNamespace(global_step=0)
    trainer = SimpleNamespace(args=SimpleNamespace(seed=seed), state=state, teachers=probabilities,
                              teacher_probabilities=probabilities)
    draws = []
    for step in range(steps):
        state.global_step = step
        draws.append(DistillationTrainer._draw_teacher(trainer))
    return draws


def plan_phases(draws: list[int], num_teachers: int, warmup_steps: int, steps: int) -> list[str]:
    """The phase of each step: warm-up until ``warmup_steps`` ran and every teacher ran once, count until every
    teacher was counted once, clean until ``steps`` ran and every teacher was timed once, then ``steps``
    instrumented steps. Raises if the draws leave a teacher out."""
    phases: list[str] = []
    for phase, minimum in (("warmup", warmup_steps), ("count", 0), ("clean", steps)):
        seen: set[int] = set()
        while len(phases) < len(draws) and (len(seen) < num_teachers or sum(p == phase for p in phases) < minimum):
            seen.add(draws[len(phases)])
            phases.append(phase)
        if len(seen) < num_teachers:
            raise ValueError(f"a teacher was not drawn in the first {len(draws)} steps")
    return phases + ["instrumented"] * steps


class StepTimer(TrainerCallback):
    """Times ``Trainer.train()`` steps of a ``DistillationTrainer`` from outside.

    The trainer's own methods are wrapped on the instance (``get_batch_samples``, ``training_step``,
    ``_run_teacher``, ``loss_fn``): the wrappers read the clock around the original call, synchronise the device
    only during instrumented steps, and record which teacher each step drew. The phase of step ``i`` (0-based) is
    ``phases[i]``.
    """

    def __init__(self, trainer, phases: list[str], device: torch.device) -> None:
        self.trainer = trainer
        self.phases = phases
        self.sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.steps: list[dict[str, Any]] = []  # one per finished step: phase, teacher, step_s, data_wait_s, ...
        self.counted: dict[int, dict[str, Any]] = {}  # teacher -> flops, teacher_flops, host_syncs, sync_counts
        self.warmup_s = 0.0
        self._parts: dict[str, float] = defaultdict(float)
        self._marks: dict[str, float] = {}
        self._teacher: int | None = None
        self._teacher_flops: int | None = None
        self._data_wait = 0.0
        self._train_start = self._last_end = 0.0
        self._counters: list[Any] = []
        trainer.get_batch_samples = self._timed(trainer.get_batch_samples, "data")
        trainer.training_step = self._timed(trainer.training_step, "training_step")
        trainer._run_teacher = self._teacher_call(self._timed(trainer._run_teacher, "teacher"))
        trainer.loss_fn = self._timed_loss(trainer.loss_fn)
        trainer.add_callback(self)

    def _phase(self, step: int) -> str:
        return self.phases[step] if step < len(self.phases) else "after"

    def _current(self) -> str:
        # Called within a step (or while fetching its batch): global_step counts the steps already finished.
        return self._phase(self.trainer.state.global_step)

    def _timed(self, fn: Callable, name: str) -> Callable:
        def wrapper(*args, **kwargs):
            instrumented = self._current() == "instrumented"
            if instrumented:
                self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if instrumented:
                self.sync()
            end = time.perf_counter()
            if name == "data":
                self._data_wait += end - start  # unsynchronised: what the host waits for the loader
            if instrumented:
                self._parts[name] += end - start
                self._marks.setdefault(f"{name}_start", start)
                self._marks[f"{name}_end"] = end
            return out

        return wrapper

    def _teacher_call(self, run_teacher: Callable) -> Callable:
        def wrapper(index, *args, **kwargs):
            self._teacher = int(index)
            if self._current() != "count":
                return run_teacher(index, *args, **kwargs)
            with flop_counter.FlopCounterMode(display=False) as flops:
                out = run_teacher(index, *args, **kwargs)
            self._teacher_flops = flops.get_total_flops()
            return out

        return wrapper

    def _mark_once(self, name: str) -> None:
        self.sync()
        self._marks.setdefault(name, time.perf_counter())

    def _mark_latest(self, name: str) -> None:
        self.sync()
        self._marks[name] = time.perf_counter()

    def _timed_loss(self, loss_fn: Callable) -> Callable:
        timed = self._timed(loss_fn, "loss_forward")

        def wrapper(student_global: torch.Tensor, teacher_global: torch.Tensor, **kwargs):
            total, terms = timed(student_global, teacher_global, **kwargs)
            if self._current() == "instrumented":
                # The loss backward runs from the gradient of the total until the gradients of the student's
                # outputs are complete (a tensor hook fires once all contributions have been summed).
                total.register_hook(lambda grad: self._mark_once("loss_backward_start"))
                for output in (student_global, kwargs.get("student_tokens")):
                    if output is not None and output.requires_grad:
                        output.register_hook(lambda grad: self._mark_latest("student_outputs_grad"))
            return total, terms

        return wrapper

    def on_train_begin(self, args, state, control, **kwargs):
        self.sync()
        self._train_start = self._last_end = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._phase(state.global_step) == "count":
            flops = flop_counter.FlopCounterMode(display=False)
            syncs = count_host_syncs(inside=(self.trainer, "training_step"))
            self._counters = [flops, syncs, flops.__enter__(), syncs.__enter__()]

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step - 1  # already counted
        phase = self._phase(step)
        if phase == "count":
            flops, syncs, _, counter = self._counters
            syncs.__exit__(None, None, None)
            flops.__exit__(None, None, None)
            self.counted.setdefault(self._teacher, {
                "flops": flops.get_total_flops(), "teacher_flops": self._teacher_flops,
                "host_syncs": counter.per_call(), "host_sync_calls": dict(counter.counts),
            })
            self._counters = []
        self.sync()
        end = time.perf_counter()
        record = {"phase": phase, "teacher": self._teacher, "step_s": end - self._last_end,
                  "data_wait_s": self._data_wait}
        if phase == "warmup":
            self.warmup_s = end - self._train_start
        elif phase == "instrumented":
            record["parts_s"] = self._split(end)
        self.steps.append(record)
        self._last_end = end
        self._data_wait = 0.0
        self._parts.clear()
        self._marks.clear()

    def _split(self, end: float) -> dict[str, float]:
        parts, marks = self._parts, self._marks
        loss_backward = marks["student_outputs_grad"] - marks["loss_backward_start"]
        loss = parts["loss_forward"] + loss_backward
        split = {
            "data": parts["data"],
            "teacher": parts["teacher"],
            "student": parts["training_step"] - parts["teacher"] - loss,
            "loss": loss,
            "optimizer": end - marks["training_step_end"],
        }
        split["other"] = end - marks["data_start"] - sum(split.values())
        return split


# ---- models and data ----------------------------------------------------------------------------------------


def write_models(root: Path, student: str, tiny: bool) -> dict[str, Path]:
    """The recipe's structures with random weights: Depth Anything V2 Large and GenPercept teachers (weights
    saved), the student (config only: it starts random)."""
    folders = {"depthanything": root / "depthanything-large", "genpercept": root / "genpercept-disparity",
               "student": root / f"student-{student}"}
    teacher_config = tiny_depth_config("large") if tiny else depth_config("depthanything-large")
    student_config = tiny_depth_config(student) if tiny else depth_config(f"depthanything-{student}")
    for config, folder in ((teacher_config, folders["depthanything"]), (student_config, folders["student"])):
        config.save_pretrained(folder)
        default_image_processor().save_pretrained(folder)
    load_depth_model(str(folders["depthanything"]), init="random").save_pretrained(folders["depthanything"])
    # GenPercept's 768 keeps the tiny stand-in at the views' own side (0): the smoke run stays small.
    write_genpercept_folder(folders["genpercept"], "tiny" if tiny else "sd21",
                            processing_resolution=0 if tiny else 768)
    return folders


def write_shards(root: Path, num_shards: int, per_shard: int, size: tuple[int, int], distinct: int) -> Path:
    """``num_shards`` SA-1B-style shards of ``per_shard`` samples: ``sa_N.jpg`` (``distinct`` generated scenes
    rendered at a quarter size and enlarged, JPEG quality 90) and an ``sa_N.json`` of about 100 kB of mask
    annotations, which the loader must skip."""
    images = []
    for k in range(distinct):
        scene = render_scene(k, max(16, size[0] // 4), max(16, size[1] // 4))
        buffer = io.BytesIO()
        Image.fromarray(scene.image).resize(size[::-1], Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    rle = {"size": list(size), "counts": "x" * 2000}
    shards = root / "shards"
    shards.mkdir(parents=True)
    n = 0
    for shard in range(num_shards):
        with tarfile.open(shards / f"sa_{shard:06d}.tar", "w") as tar:
            for _ in range(per_shard):
                n += 1
                meta = json.dumps({"image": {"image_id": n, "height": size[0], "width": size[1]},
                                   "annotations": [{"id": m, "segmentation": rle} for m in range(50)]}).encode()
                for name, data in ((f"sa_{n}.jpg", images[n % distinct]), (f"sa_{n}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return shards


# ---- one case -------------------------------------------------------------------------------------------------


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kiB on Linux


def _release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()  # compiled graphs hold the case's models; later cases must compile afresh anyway
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _gather(value: Any) -> list[Any]:
    """``value`` of every rank (rank order); ``[value]`` in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


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


def run_case(case: dict[str, Any], argv: list[str], phases: list[str], draws: list[int], device: torch.device,
             batch_size: int, processes: int, project_steps: int) -> dict[str, Any]:
    """Build the case's trainer, run ``len(phases)`` steps of ``Trainer.train()`` and summarise them."""
    start = time.perf_counter()
    trainer = build_trainer(*parse_distill_args(argv))
    build_s = time.perf_counter() - start
    timer = StepTimer(trainer, phases, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    drawn = [s["teacher"] for s in timer.steps]
    if drawn != draws[: len(drawn)]:
        raise RuntimeError(f"the trainer drew teachers {drawn}, the plan expected {draws[: len(drawn)]}")
    model, run_dir = trainer.model_wrapped, trainer.args.output_dir
    unwrapped = trainer.accelerator.unwrap_model(model)
    summary = {
        **case,
        "status": "ok",
        "processes": processes,
        "teachers": [Path(name).name for name in trainer.card_info.teachers],
        "teacher_weights": list(trainer.teacher_probabilities),
        "student_compiled": is_compiled_module(model),
        "student_activation_checkpointing": unwrapped.is_activation_checkpointing,
        "teacher_dtypes": [str(next(t.parameters()).dtype).removeprefix("torch.") for t in trainer.teachers],
        "mixed_precision": trainer.accelerator.mixed_precision,
        "build_s": build_s,
        **summarise(timer, trainer.teacher_probabilities, batch_size, processes, project_steps),
    }
    summary["peak_memory_gib_per_device"] = _gather(_peak_memory_gib(device))
    del trainer, timer, model, unwrapped
    _release(device)
    return summary | {"_run_dir": str(run_dir)}


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


def _write_report(report: dict[str, Any], output_dir: Path) -> None:
    (output_dir / "gpu_suite.json").write_text(json.dumps(report, indent=2))
    (output_dir / "gpu_suite.md").write_text(markdown_table(report))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="output/gpu_suite", help="Where gpu_suite.json/.md are written.")
    parser.add_argument("--tiny", action="store_true",
                        help="Tiny stand-ins of the same structures at 56 px, batch 2, on CPU: the suite's smoke "
                             "test (no figures).")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="Process counts to run the cases with (default: 1, and the GPU count when there are "
                             "several; more than 1 runs through accelerate launch).")
    parser.add_argument("--student", default="base", choices=["small", "base", "large"],
                        help="Student structure (the recipe's: base).")
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                        help="Cases without and/or with --torch_compile.")
    parser.add_argument("--activation_checkpointing", nargs="+", default=["off"], choices=["off", "on"],
                        help="Cases with the student's activation checkpointing off and/or on.")
    parser.add_argument("--compile_backend", default=None, help="--torch_compile_backend (default inductor; tiny "
                                                                 "aot_eager).")
    parser.add_argument("--size", type=int, default=None, help="Global view and patch side (default 560, tiny 56).")
    parser.add_argument("--batch_size", type=int, default=None, help="Per-device batch (default 8, tiny 2).")
    parser.add_argument("--num_local_patches", type=int, default=2)
    parser.add_argument("--warmup_steps", type=int, default=None, help="Untimed steps first (default 3, tiny 1).")
    parser.add_argument("--steps", type=int, default=None,
                        help="Clean steps (at least; until every teacher was timed), then as many instrumented "
                             "steps (default 10, tiny 1).")
    parser.add_argument("--dataloader_num_workers", type=int, default=None,
                        help="Loader worker processes (default: the recipe's 8; tiny 0).")
    parser.add_argument("--project_steps", type=int, default=None,
                        help="Steps the projected wall time is for (default: the recipe's max_steps, 20000).")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="Dense bf16 peak of the device in TFLOP/s (overrides the table).")
    parser.add_argument("--recipe", default=RECIPE, help="The training recipe the cases run.")
    parser.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)  # a rank of accelerate launch
    args = parser.parse_args(argv)
    tiny_defaults = {"size": 56, "batch_size": 2, "warmup_steps": 1, "steps": 1, "dataloader_num_workers": 0,
                     "compile_backend": "aot_eager"}
    gpu_defaults = {"size": 560, "batch_size": 8, "warmup_steps": 3, "steps": 10, "compile_backend": "inductor",
                    "dataloader_num_workers": None}
    for name, value in (tiny_defaults if args.tiny else gpu_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    recipe = load_config_file(args.recipe)
    if args.dataloader_num_workers is None:
        args.dataloader_num_workers = int(recipe.get("dataloader_num_workers", 0))
    if args.project_steps is None:
        args.project_steps = int(recipe.get("max_steps", 20000))
    try:
        check_crop_size("--size", args.size)
    except ValueError as error:
        parser.error(str(error))
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup_steps must be >= 1 (the first step compiles and warms up)")
    if args.processes is not None and min(args.processes) < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    return args


def case_argv(args: argparse.Namespace, case: dict[str, Any], folders: dict[str, Path], shards: Path,
              output_dir: Path, num_steps: int) -> list[str]:
    """The ``scripts/distill.py`` command line of one case: the recipe with the stand-in models and shards, and no
    saving, logging or visualisation inside the timed steps."""
    argv = [
        "--config", args.recipe,
        "--teacher_models", str(folders["depthanything"]), str(folders["genpercept"]),
        "--student_arch", str(folders["student"]), "--student_init", "random",
        "--dataset_dir", str(shards), "--dataset_format", "webdataset", "--output_dir", str(output_dir),
        "--global_crop_size", str(args.size), "--local_crop_size", str(args.size),
        "--num_local_patches", str(args.num_local_patches), "--per_device_train_batch_size", str(args.batch_size),
        "--max_steps", str(num_steps), "--warmup_steps", "0", "--save_strategy", "no",
        "--logging_steps", str(num_steps + 1), "--visualize_steps", "0", "--report_to", "none",
        "--disable_tqdm", "true", "--dataloader_num_workers", str(args.dataloader_num_workers),
    ]
    if args.tiny:
        argv += ["--use_cpu", "--bf16", "false", "--min_region", "80"]
    if case["activation_checkpointing"]:
        argv += ["--activation_checkpointing"]
    if case["torch_compile"]:
        argv += ["--torch_compile", "--torch_compile_backend", args.compile_backend]
    return argv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, tiny: bool, argv: list[str]) -> list[str]:
    """``accelerate launch`` of this script on ``processes`` ranks (DDP; gloo on CPU), bf16 on GPUs."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no" if tiny else "bf16", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), __file__, *argv]


def run_cases(args: argparse.Namespace, processes: int, root: Path, device: torch.device) -> list[dict[str, Any]]:
    """Every case with ``processes`` processes (this one, or one rank of ``accelerate launch``)."""
    folders = {name: root / "models" / folder for name, folder in (
        ("depthanything", "depthanything-large"), ("genpercept", "genpercept-disparity"),
        ("student", f"student-{args.student}"))}
    plan = json.loads((root / "plan.json").read_text())
    results = []
    cases = [{"name": f"{args.recipe}, compile {compiled}, ckpt {checkpointing}, {processes} proc",
              "torch_compile": compiled == "on", "activation_checkpointing": checkpointing == "on"}
             for compiled in args.compile for checkpointing in args.activation_checkpointing]
    for index, case in enumerate(cases):
        phases = [p if p != "count" or not case["torch_compile"] else "warmup" for p in plan["phases"]]
        shards, run_dir = root / "data" / f"shards-{processes}", root / "runs" / f"{processes}-{index}"
        argv = case_argv(args, case, folders, shards, run_dir, len(phases))
        print(f"== {case['name']}", flush=True)
        try:
            result = run_case(case, argv, phases, plan["draws"], device, args.batch_size, processes,
                              args.project_steps)
        except Exception as error:  # one failing case must not lose the others' figures
            traceback.print_exc()
            result = {**case, "processes": processes, "status": f"error: {type(error).__name__}: {error}"[:500]}
            _release(device)
        results.append(result)
    return results


def prepare(args: argparse.Namespace, root: Path, process_counts: list[int]) -> None:
    """Models, the plan of phases (from the trainer's teacher draws) and one set of shards per process count:
    one shard per reader (ranks x workers), each long enough for its reader's share of the steps."""
    recipe = load_config_file(args.recipe)
    weights = [float(w) for w in recipe["teacher_sampling_weights"]]
    probabilities = [w / sum(weights) for w in weights]
    seed = int(recipe.get("seed", DistillationArguments.__dataclass_fields__["seed"].default))
    limit = args.warmup_steps + 200 + 2 * args.steps
    draws = teacher_draws(seed, probabilities, limit)
    phases = plan_phases(draws, len(weights), args.warmup_steps, args.steps)
    (root / "plan.json").write_text(json.dumps({"draws": draws[: len(phases)], "phases": phases}))
    write_models(root / "models", args.student, args.tiny)
    size = (96, 128) if args.tiny else SA1B_IMAGE_SIZE
    for processes in process_counts:
        workers = max(1, args.dataloader_num_workers)
        per_shard = (-(-len(phases) // workers) + 1) * args.batch_size
        write_shards(root / "data" / f"tmp-{processes}", processes * workers, per_shard, size,
                     distinct=2 if args.tiny else 8).rename(root / "data" / f"shards-{processes}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.launched:  # one rank of a multi-process case: the parent prepared everything in --output_dir
        root = Path(args.output_dir) / "work"
        device = torch.device("cpu") if args.tiny else torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        _register_cpu_sdpa_flops()
        world = int(os.environ["WORLD_SIZE"])
        results = run_cases(args, world, root, device)
        if int(os.environ.get("RANK", 0)) == 0:
            (root / f"results-{world}.json").write_text(json.dumps(results))
        return 0

    started = time.perf_counter()
    if args.tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_suite.py: error: no CUDA device (use --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    _register_cpu_sdpa_flops()
    device_count = torch.cuda.device_count() if device.type == "cuda" else 1
    process_counts = args.processes or sorted({1, device_count})
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak_tflops"
    else:
        found = lookup_peak(device_name) if device.type == "cuda" else None
        peak, peak_source = (found[1], f"table: {found[0]}") if found else (None, "not in the table")
    print("Dense bf16 peaks (TFLOP/s): " + ", ".join(f"{label} {tflops:g}" for _, label, tflops in PEAK_BF16_TFLOPS))
    print(f"Device: {device_name} x {device_count}; bf16 peak {peak or 'unknown'} TFLOP/s ({peak_source})")

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "device": device_name, "device_count": device_count, "peak_bf16_tflops": peak, "peak_source": peak_source,
        "tiny": args.tiny, "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "command": " ".join(["python", "benchmarks/gpu_suite.py", *argv]),
        "settings": {key: getattr(args, key) for key in (
            "recipe", "student", "size", "batch_size", "num_local_patches", "warmup_steps", "steps",
            "dataloader_num_workers", "compile_backend", "project_steps")},
        "cases": [],
    }
    root = output_dir / "work"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    try:
        prepare(args, root, process_counts)
        report["plan"] = json.loads((root / "plan.json").read_text())
        print(f"Prepared models and shards in {time.perf_counter() - started:.0f} s", flush=True)
        for processes in process_counts:
            if processes == 1:
                results = run_cases(args, 1, root, device)
            else:
                command = launch_command(processes, args.tiny, [*argv, "--launched"])
                print(" ".join(command), flush=True)
                completed = subprocess.run(command)
                path = root / f"results-{processes}.json"
                results = json.loads(path.read_text()) if completed.returncode == 0 and path.is_file() else [
                    {"name": f"{args.recipe}, {processes} proc", "processes": processes,
                     "status": f"error: accelerate launch exited with {completed.returncode}"}]
            for result in results:
                result.pop("_run_dir", None)
            report["cases"] += results
            add_mfu(report["cases"], peak)
            _write_report(report, output_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    _write_report(report, output_dir)
    print(markdown_table(report))
    print(f"Wrote {output_dir / 'gpu_suite.json'} and {output_dir / 'gpu_suite.md'} in {report['total_s']:.0f} s")
    return 0 if all(case["status"] == "ok" for case in report["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
