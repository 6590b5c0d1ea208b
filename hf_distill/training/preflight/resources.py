"""Preflight checks of resources: device memory for the batch and teachers, disk space for the checkpoints."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from hf_distill.teachers import GenPerceptTeacher
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.preflight.report import FAIL, PASS, WARN, CheckResult, PreflightContext, error_summary, gib
from hf_distill.training.run import resolve_teacher_dtype

# Transient activations of one teacher forward on one image, as a fraction of the model's float32 weight bytes at a
# reference input side, measured by benchmarks/bench_teachers.py (CPU float32, batch 1): Depth Anything V2 Large adds
# 0.66 GiB at 560 x 560 for 1.25 GiB of weights, GenPercept 2.32 GiB at 768 x 768 for 3.54 GiB. Scaled linearly with
# the input pixels and the dtype's size; other families use Depth Anything's ratio.
ACTIVATION_RATIO = {"depth": (0.53, 560), "genpercept": (0.66, 768)}
# Student training memory per parameter: float32 weights, gradients and AdamW's two moments.
TRAIN_BYTES_PER_PARAM = 16
# A training forward keeps its activations for the backward: about this many times a no-grad forward's transient
# (activation checkpointing keeps about a quarter of that).
TRAIN_ACTIVATION_FACTOR = 3.0
MEMORY_MARGIN = 1.2  # CUDA context, allocator fragmentation, DataLoader buffers
# One checkpoint-*/ per student parameter: float32 weights and AdamW's two moments.
CHECKPOINT_BYTES_PER_PARAM = 12


def free_memory(args: DistillationArguments) -> tuple[int, str]:
    """(bytes free, where) of the device a rank trains on: CUDA ``mem_get_info``, else available RAM."""
    if torch.cuda.is_available() and not args.use_cpu:
        device = torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"cuda:{device} free"
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024, "available RAM"


def estimate_memory(ctx: PreflightContext) -> dict[str, int]:
    """Per-device bytes: teachers' weights, the largest teacher step's activations, the student's training memory."""
    d, args = ctx.data_args, ctx.args
    dtype_bytes = torch.finfo(resolve_teacher_dtype(ctx.model_args.teacher_dtype)).bits // 8
    images = args.per_device_train_batch_size * (1 + d.num_local_patches)  # the global view and patches together
    weights, activations = 0, 0
    for name, family, params in ctx.facts.get("teachers", []):
        weights += params * dtype_bytes
        genpercept = family.teacher_class is GenPerceptTeacher
        ratio, side = ACTIVATION_RATIO["genpercept" if genpercept else "depth"]
        input_side = GenPerceptTeacher.DEFAULT_RESOLUTION if genpercept else max(d.global_crop_size,
                                                                                   d.local_crop_size)
        per_image = ratio * params * dtype_bytes * (input_side / side) ** 2
        activations = max(activations, int(images * per_image))
    _, student_params = ctx.facts["student"]
    ratio, side = ACTIVATION_RATIO["depth"]
    factor = TRAIN_ACTIVATION_FACTOR / (4 if args.activation_checkpointing else 1)
    student_act = args.per_device_train_batch_size * factor * ratio * student_params * 4 * (
        d.global_crop_size / side) ** 2
    return {"teacher weights": weights, "teacher activations": activations,
            "student training": student_params * TRAIN_BYTES_PER_PARAM + int(student_act)}


def check_memory(ctx: PreflightContext) -> Iterable[CheckResult]:
    """Per-device estimate for the batch, precision and teachers against the device's free memory."""
    if "student" not in ctx.facts:
        yield CheckResult("memory", WARN, "not estimated (the student did not resolve)", "see the student row")
        return
    parts = estimate_memory(ctx)
    total = int(sum(parts.values()) * MEMORY_MARGIN)
    free, where = free_memory(ctx.args)
    ctx.facts["memory_estimate"] = total
    text = (f"estimate {gib(total)} per device (" + ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
            + f", x{MEMORY_MARGIN} margin) vs {gib(free)} {where}")
    if total > free:
        yield CheckResult("memory", FAIL, text, "lower --per_device_train_batch_size (raise "
                          "--gradient_accumulation_steps), --activation_checkpointing, --teacher_dtype bfloat16, or a "
                          "larger device")
    else:
        yield CheckResult("memory", PASS, text)


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(ctx: PreflightContext) -> Iterable[CheckResult]:
    """``output_dir`` is writable and holds ``--save_total_limit`` checkpoints plus the flat exports."""
    output = Path(ctx.args.output_dir)
    try:  # a probe file in the folder, or in the folder that will hold it (nothing of the run is created)
        parent = _existing_parent(output)
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".preflight-"):
            pass
    except OSError as error:
        yield CheckResult("disk", FAIL, f"{output} is not writable: {error_summary(error)}",
                          "choose another --output_dir or fix its permissions")
        return
    if "student" not in ctx.facts:
        yield CheckResult("disk", WARN, f"{output} writable; size not estimated", "see the student row")
        return
    _, params = ctx.facts["student"]
    args = ctx.args
    steps = args.max_steps if args.max_steps > 0 else None
    saves = None if steps is None or args.save_strategy == "no" else max(1, math.floor(steps / max(args.save_steps, 1)))
    kept = args.save_total_limit or saves or 1
    if saves is not None:
        kept = min(kept, saves)
    flat_exports = (saves or kept) * params * 4  # student_checkpoint_{step}.safetensors are never rotated
    checkpoint = params * CHECKPOINT_BYTES_PER_PARAM
    need = kept * checkpoint + flat_exports + 3 * params * 4  # + the student folder, best and final exports
    free = shutil.disk_usage(_existing_parent(output)).free
    text = (f"{output} writable; {kept} checkpoint(s) of {gib(checkpoint)} (--save_total_limit "
            f"{args.save_total_limit}) + {saves or kept} flat exports + final files = {gib(need)} vs {gib(free)} free")
    if need > free:
        yield CheckResult("disk", FAIL, text, "free space, set --save_total_limit, or raise --save_steps")
    else:
        yield CheckResult("disk", PASS, text)
