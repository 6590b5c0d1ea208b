#!/usr/bin/env python
"""The GPU performance suite: DistillationTrainer steps of real Depth Anything V2 structures, in one command.

    python benchmarks/gpu_suite.py --output_dir output/gpu_suite   # one GPU: the whole matrix, < 8 minutes (H100)
    python benchmarks/gpu_suite.py --tiny --output_dir /tmp/suite  # CPU smoke run of the same code (tests)

Cases: V2 Large -> Base and V2 Large -> Small (random weights, built from constants: no download), each without
and with ``--torch_compile`` and with the student's activation checkpointing off and on. Every case builds its
trainer as ``scripts/distill.py`` does (``build_trainer`` over the shipped recipe ``sa1b_multiteacher`` with one teacher,
generated images, a global view and 2 local patches at 560, batch 8, bf16 teacher, bf16 autocast for the student)
and runs ``Trainer.train()``; the steps are the trainer's own, timed from outside:

  warm-up       compilation and allocator warm-up (reported as warmup_s)
  FLOP step     cases without --torch_compile: ``torch.utils.flop_counter.FlopCounterMode`` around one whole step
  clean steps   one synchronisation per step (at its end): step time and samples/s, the figures to quote
  instrumented  synchronised timers split each step into
                  data       waiting for the loader's next batch and moving it to the device
                  teacher    the teacher forward (global view and patches in one call)
                  student    student forward + backward (with the trainer's bookkeeping in training_step)
                  loss       DistillationLoss forward + its backward (until the gradients reach the student's outputs)
                  optimizer  gradient clipping, AdamW, the schedule, zero_grad
                  other      the rest of the Trainer loop (callbacks, loss bookkeeping)
                the fractions sum to 1; step_over_model_work = clean step / (teacher + student) (goal <= 1.10).

MFU = model FLOPs of one step (counted without activation checkpointing's recomputation) / clean step time / the
device's dense bf16 peak, looked up from the device name in PEAK_BF16_TFLOPS (printed; --peak_tflops overrides).
gpu_suite.json and gpu_suite.md are rewritten after every case, so a run cut short keeps what it measured; cases
that would start after --time_budget_s are recorded as skipped. Exit status 1 when a case failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from accelerate.utils import is_compiled_module
from torch.utils import flop_counter
from transformers import TrainerCallback

from hf_distill.testing import write_image_folder
from hf_distill.data.views import check_crop_size
from hf_distill.models import default_image_processor, depth_config, load_depth_model, tiny_depth_config
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer

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


class StepTimer(TrainerCallback):
    """Times ``Trainer.train()`` steps of a ``DistillationTrainer`` from outside.

    The trainer's own methods are wrapped on the instance (``get_batch_samples``, ``training_step``,
    ``_run_teacher``, ``loss_fn``): the wrappers only synchronise and read the clock around the original call, and
    only during instrumented steps. The phase of step ``i`` (0-based) is ``phases[i]``.
    """

    def __init__(self, trainer, phases: list[str], device: torch.device) -> None:
        self.trainer = trainer
        self.phases = phases
        self.sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.clean_s: list[float] = []
        self.instrumented: list[dict[str, float]] = []
        self.flops: int | None = None
        self.warmup_s = 0.0
        self._parts: dict[str, float] = defaultdict(float)
        self._marks: dict[str, float] = {}
        self._train_start = self._last_end = 0.0
        self._flop_mode: flop_counter.FlopCounterMode | None = None
        trainer.get_batch_samples = self._timed(trainer.get_batch_samples, "data")
        trainer.training_step = self._timed(trainer.training_step, "training_step")
        trainer._run_teacher = self._timed(trainer._run_teacher, "teacher")
        trainer.loss_fn = self._timed_loss(trainer.loss_fn)
        trainer.add_callback(self)

    def _phase(self, step: int) -> str:
        return self.phases[step] if step < len(self.phases) else "after"

    def _instrumented(self) -> bool:
        # Called within a step (or while fetching its batch): global_step counts the steps already finished.
        return self._phase(self.trainer.state.global_step) == "instrumented"

    def _timed(self, fn: Callable, name: str) -> Callable:
        def wrapper(*args, **kwargs):
            if not self._instrumented():
                return fn(*args, **kwargs)
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            end = time.perf_counter()
            self._parts[name] += end - start
            self._marks.setdefault(f"{name}_start", start)
            self._marks[f"{name}_end"] = end
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
            if self._instrumented():
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
        if self._phase(state.global_step) == "flops":
            self._flop_mode = flop_counter.FlopCounterMode(display=False)
            self._flop_mode.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step - 1  # already counted
        phase = self._phase(step)
        if phase == "flops":
            self._flop_mode.__exit__(None, None, None)
            self.flops = self._flop_mode.get_total_flops()
            self._flop_mode = None
        self.sync()
        end = time.perf_counter()
        if phase == "warmup":
            self.warmup_s = end - self._train_start
        elif phase == "clean":
            self.clean_s.append(end - self._last_end)
        elif phase == "instrumented":
            self.instrumented.append(self._split(end))
        self._last_end = end
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
        total = end - marks["data_start"]
        split["other"] = total - sum(split.values())
        split["total"] = total
        return split


def _write_models(root: Path, names: set[str], tiny: bool) -> dict[str, Path]:
    """A folder per structure: random weights (teachers load them) or config only (students start random)."""
    folders = {}
    for name in sorted(names):
        folder = root / name
        config = tiny_depth_config(name) if tiny else depth_config(f"depthanything-{name}")
        config.save_pretrained(folder)
        default_image_processor().save_pretrained(folder)
        folders[name] = folder
    return folders


def _save_teacher_weights(folder: Path) -> None:
    if not (folder / "model.safetensors").is_file():
        load_depth_model(str(folder), init="random").save_pretrained(folder)


def _write_images(root: Path, count: int, size: tuple[int, int], distinct: int) -> Path:
    """``count`` image files (one epoch of the run, so no epoch boundary falls inside the timed steps) holding
    ``distinct`` generated scenes: the rest are hard links, decoded like any other file."""
    scenes = sorted(write_image_folder(root / "scenes", num_images=min(distinct, count), size=size, nested=False)
                    .glob("*.jpg"))
    images = root / "images"
    images.mkdir()
    for k in range(count):
        target = images / f"img_{k:05d}.jpg"
        try:
            os.link(scenes[k % len(scenes)], target)
        except OSError:
            target.write_bytes(scenes[k % len(scenes)].read_bytes())
    return images


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kiB on Linux


def _release(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()  # compiled graphs hold the case's models; later cases must compile afresh anyway
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(case: dict[str, Any], argv: list[str], phases: list[str], device: torch.device,
             batch_size: int) -> dict[str, Any]:
    """Build the case's trainer, run ``len(phases)`` steps of ``Trainer.train()`` and summarise the timings."""
    start = time.perf_counter()
    trainer = build_trainer(*parse_distill_args(argv))
    build_s = time.perf_counter() - start
    timer = StepTimer(trainer, phases, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    model, teacher, run_dir = trainer.model_wrapped, trainer.teachers[0], trainer.args.output_dir
    summary = {
        **case,
        "status": "ok",
        "student_compiled": is_compiled_module(model),
        "teacher_compiled": is_compiled_module(teacher),
        "student_activation_checkpointing": trainer.accelerator.unwrap_model(model).is_activation_checkpointing,
        "teacher_attention": trainer.accelerator.unwrap_model(teacher).model.config.backbone_config._attn_implementation,
        "build_s": build_s,
        "warmup_s": timer.warmup_s,
        "step_s": statistics.median(timer.clean_s),
        "clean_steps_s": timer.clean_s,
        "flops_per_step": timer.flops,
        "peak_memory_gib": _peak_memory_gib(device),
    }
    summary["samples_per_second"] = batch_size / summary["step_s"]
    parts = {name: statistics.fmean(step[name] for step in timer.instrumented) for name in (*PARTS, "total")}
    summary["instrumented_step_s"] = parts.pop("total")
    summary["parts_s"] = parts
    summary["fractions"] = {name: value / summary["instrumented_step_s"] for name, value in parts.items()}
    summary["step_over_model_work"] = summary["step_s"] / (parts["teacher"] + parts["student"])
    del trainer, timer, model, teacher
    _release(device)
    shutil.rmtree(run_dir, ignore_errors=True)  # student_final.safetensors, train.log
    return summary


def add_mfu(cases: list[dict[str, Any]], peak_tflops: float | None) -> None:
    """Per pair, the model FLOPs of a step are those counted without activation checkpointing (whose
    recomputation is not model work); MFU = model FLOPs / clean step time / peak."""
    for case in cases:
        if case["status"] != "ok":
            continue
        counted = [c["flops_per_step"] for c in cases if c["pair"] == case["pair"] and c["status"] == "ok"
                   and c["flops_per_step"] and not c["activation_checkpointing"]]
        case["model_flops_per_step"] = counted[0] if counted else None
        achieved = case["model_flops_per_step"] / case["step_s"] / 1e12 if counted else None
        case["model_tflops_per_second"] = achieved
        case["mfu"] = achieved / peak_tflops if achieved is not None and peak_tflops else None


def markdown_table(report: dict[str, Any]) -> str:
    """The cases as one markdown table (parts in ms and as a share of the instrumented step)."""
    heading = (f"Device: {report['device']}; bf16 peak {report['peak_bf16_tflops'] or 'unknown'} TFLOP/s "
               f"({report['peak_source']}); torch {report['torch']}, transformers {report['transformers']}.")
    if report["tiny"]:
        heading = "**CPU smoke run of tiny structures: not a measurement.** " + heading
    settings = report["settings"]
    columns = ["case", "samples/s", "step ms", *(PART_TITLES[p] for p in PARTS), "step / model work", "peak GiB",
               "TFLOP/step", "MFU", "warm-up s"]
    lines = [
        heading, "",
        f"`{report['command']}`: global view + {settings['num_local_patches']} patches at {settings['size']}, "
        f"batch {settings['batch_size']}, medians over {settings['steps']} steps.", "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for case in report["cases"]:
        if case["status"] != "ok":
            cells = [case["name"], case["status"], *[""] * (len(columns) - 2)]
        else:
            flops, mfu = case["model_flops_per_step"], case["mfu"]
            cells = [
                case["name"], f"{case['samples_per_second']:.2f}", f"{case['step_s'] * 1000:.1f}",
                *(f"{case['parts_s'][p] * 1000:.1f} ({case['fractions'][p]:.0%})" for p in PARTS),
                f"{case['step_over_model_work']:.2f}", f"{case['peak_memory_gib']:.2f}",
                "-" if flops is None else f"{flops / 1e12:.3g}", "-" if mfu is None else f"{mfu:.1%}",
                f"{case['warmup_s']:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_report(report: dict[str, Any], output_dir: Path) -> None:
    (output_dir / "gpu_suite.json").write_text(json.dumps(report, indent=2))
    (output_dir / "gpu_suite.md").write_text(markdown_table(report))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="output/gpu_suite", help="Where gpu_suite.json/.md are written.")
    parser.add_argument("--tiny", action="store_true",
                        help="Tiny structures at 56 px, batch 2, on CPU: the suite's smoke test (about a minute; "
                             "no figures).")
    parser.add_argument("--pairs", nargs="+", default=["large:base", "large:small"],
                        help="teacher:student V2 structures (small, base, large).")
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="Cases without and/or with --torch_compile.")
    parser.add_argument("--activation_checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="Cases with the student's activation checkpointing off and/or on.")
    parser.add_argument("--compile_backend", default=None,
                        help="--torch_compile_backend of the compiled cases (default inductor; aot_eager with --tiny: "
                             "inductor's CPU code generation takes minutes).")
    parser.add_argument("--size", type=int, default=None, help="Global view and patch side (default 560, tiny 56).")
    parser.add_argument("--batch_size", type=int, default=None, help="Per-device batch (default 8, tiny 2).")
    parser.add_argument("--num_local_patches", type=int, default=2)
    parser.add_argument("--warmup_steps", type=int, default=None, help="Untimed steps first (default 3, tiny 1).")
    parser.add_argument("--steps", type=int, default=None,
                        help="Clean steps, then as many instrumented steps (default 10, tiny 2).")
    parser.add_argument("--dataloader_num_workers", type=int, default=None,
                        help="Loader worker processes (default: the recipe's 8; tiny 0).")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="Dense bf16 peak of the device in TFLOP/s (overrides the table).")
    parser.add_argument("--time_budget_s", type=float, default=360.0,
                        help="Cases that would start after this many seconds are skipped (recorded as such).")
    parser.add_argument("--recipe", default=RECIPE, help="The training recipe the cases start from.")
    args = parser.parse_args(argv)
    tiny_defaults = {"size": 56, "batch_size": 2, "warmup_steps": 1, "steps": 2, "dataloader_num_workers": 0,
                     "compile_backend": "aot_eager"}
    gpu_defaults = {"size": 560, "batch_size": 8, "warmup_steps": 3, "steps": 10, "dataloader_num_workers": None,
                    "compile_backend": "inductor"}
    for name, value in (tiny_defaults if args.tiny else gpu_defaults).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for pair in args.pairs:
        teacher, _, student = pair.partition(":")
        if not {teacher, student} <= {"small", "base", "large"}:
            parser.error(f"--pairs {pair}: expected teacher:student with each of small, base, large")
    try:
        check_crop_size("--size", args.size)
    except ValueError as error:
        parser.error(str(error))
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup_steps must be >= 1 (the first step compiles and warms up)")
    return args


def case_argv(args: argparse.Namespace, case: dict[str, Any], folders: dict[str, Path], images: Path,
              output_dir: Path, num_steps: int) -> list[str]:
    """The ``scripts/distill.py`` command line of one case: the recipe with one teacher, generated images and no
    saving, logging or visualisation inside the timed steps."""
    argv = [
        "--config", args.recipe,
        "--teacher_models", str(folders[case["teacher"]]), "--teacher_sampling_weights", "1",
        "--student_arch", str(folders[case["student"]]), "--student_init", "random",
        "--dataset_dir", str(images), "--dataset_format", "images", "--output_dir", str(output_dir),
        "--global_crop_size", str(args.size), "--local_crop_size", str(args.size),
        "--num_local_patches", str(args.num_local_patches), "--per_device_train_batch_size", str(args.batch_size),
        "--max_steps", str(num_steps), "--warmup_steps", "0", "--save_strategy", "no",
        "--logging_steps", str(num_steps + 1), "--visualize_steps", "0", "--report_to", "none",
        "--disable_tqdm", "true",
    ]
    if args.dataloader_num_workers is not None:
        argv += ["--dataloader_num_workers", str(args.dataloader_num_workers)]
    if args.tiny:
        argv += ["--use_cpu", "--bf16", "false", "--min_region", "80"]
    if case["activation_checkpointing"]:
        argv += ["--activation_checkpointing"]
    if case["torch_compile"]:
        argv += ["--torch_compile", "--torch_compile_backend", args.compile_backend]
    return argv


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_suite.py: error: no CUDA device (use --tiny for the CPU smoke run)", file=sys.stderr)
        return 2
    _register_cpu_sdpa_flops()
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak_tflops"
    else:
        found = lookup_peak(device_name) if device.type == "cuda" else None
        peak, peak_source = (found[1], f"table: {found[0]}") if found else (None, "not in the table")
    print("Dense bf16 peaks (TFLOP/s): " + ", ".join(f"{label} {tflops:g}" for _, label, tflops in PEAK_BF16_TFLOPS))
    print(f"Device: {device_name}; bf16 peak {peak or 'unknown'} TFLOP/s ({peak_source})")

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timed = ["clean"] * args.steps + ["instrumented"] * args.steps
    phases_plain = ["warmup"] * args.warmup_steps + ["flops"] + timed
    phases_compiled = ["warmup"] * args.warmup_steps + timed
    report: dict[str, Any] = {
        "device": device_name,
        "peak_bf16_tflops": peak,
        "peak_source": peak_source,
        "tiny": args.tiny,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "command": " ".join(["python", "benchmarks/gpu_suite.py", *argv]),
        "settings": {key: getattr(args, key) for key in (
            "size", "batch_size", "num_local_patches", "warmup_steps", "steps", "dataloader_num_workers",
            "compile_backend", "recipe")},
        "cases": [],
    }
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = [tuple(pair.split(":")) for pair in args.pairs]
        folders = _write_models(root / "models", {name for pair in pairs for name in pair}, args.tiny)
        for teacher, _ in pairs:
            _save_teacher_weights(folders[teacher])
        images = _write_images(root / "data", args.batch_size * len(phases_plain),
                               (96, 128) if args.tiny else (672, 896), distinct=2 * args.batch_size)
        cases = [
            {"name": f"{teacher} -> {student}, compile {compiled}, ckpt {checkpointing}",
             "pair": f"{teacher}:{student}", "teacher": teacher, "student": student,
             "torch_compile": compiled == "on", "activation_checkpointing": checkpointing == "on"}
            for teacher, student in pairs
            for compiled in args.compile
            for checkpointing in args.activation_checkpointing
        ]
        for index, case in enumerate(cases):
            if time.perf_counter() - started > args.time_budget_s:
                report["cases"].append({**case, "status": "skipped (time budget)"})
                continue
            phases = phases_compiled if case["torch_compile"] else phases_plain
            argv_case = case_argv(args, case, folders, images, root / "runs" / str(index), len(phases))
            print(f"== {case['name']}", flush=True)
            try:
                result = run_case(case, argv_case, phases, device, args.batch_size)
            except Exception as error:  # one failing case must not lose the others' figures
                traceback.print_exc()
                failed = True
                result = {**case, "status": f"error: {type(error).__name__}: {error}"[:500]}
            if result["status"] != "ok":
                _release(device)  # outside the except block: the traceback no longer holds the case's models
            report["cases"].append(result)
            add_mfu(report["cases"], peak)
            _write_report(report, output_dir)
    report["total_s"] = time.perf_counter() - started
    _write_report(report, output_dir)
    print(markdown_table(report))
    print(f"Wrote {output_dir / 'gpu_suite.json'} and {output_dir / 'gpu_suite.md'} in {report['total_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
