"""The preflight's last part: one real training step and one evaluation batch, and the raw outputs' conditioning."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Iterable

import torch

from hf_distill.models import normalize_views
from hf_distill.teachers import flatness_problem, running_dtype
from hf_distill.training.preflight.report import FAIL, PASS, WARN, CheckResult, PreflightContext, error_summary, gib
from hf_distill.training.run import build_trainer


def fast_dev_run(ctx: PreflightContext) -> Iterable[CheckResult]:
    """One real training step and one evaluation batch with the real models, in a temporary output folder."""
    args, data_args = ctx.args, ctx.data_args
    with tempfile.TemporaryDirectory(prefix="hf_distill-preflight-") as tmp:
        dev_args = dataclasses.replace(
            args, output_dir=tmp, max_steps=1, save_strategy="no", push_to_hub=False, report_to="none",
            eval_strategy="no", load_best_model_at_end=False, logging_steps=1, visualize_steps=0,
            resume_from_checkpoint=None, preflight=False,
        )
        dev_data = dataclasses.replace(data_args, max_eval_samples=args.per_device_eval_batch_size)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            trainer = build_trainer(ctx.model_args, dev_data, dev_args)
            loaded = time.perf_counter()
            trainer.train()
            trained = time.perf_counter()
        except Exception as error:  # noqa: BLE001
            yield CheckResult("one training step", FAIL, error_summary(error), "see the error; the checks above passed")
            return
        yield from _output_conditioning(trainer)
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        peak = (f"; peak CUDA memory {gib(torch.cuda.max_memory_allocated())}"
                if torch.cuda.is_available() and not args.use_cpu else "")
        yield CheckResult("one training step", PASS if losses and math.isfinite(losses[-1]) else FAIL,
                          f"loss {f'{losses[-1]:.4g}' if losses else 'not logged'}; models loaded in {loaded - start:.1f} s, "
                          f"step {trained - loaded:.1f} s{peak}",
                          "" if losses and math.isfinite(losses[-1]) else "the loss is not finite: check the teachers")
        if trainer.eval_dataset is not None:
            try:
                metrics = trainer.evaluate()
            except Exception as error:  # noqa: BLE001
                yield CheckResult("one evaluation batch", FAIL, error_summary(error), "see the error")
                return
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("eval_abs_rel", "eval_delta1"))
            yield CheckResult("one evaluation batch", PASS, f"{len(trainer.eval_dataset)} samples: {shown}")
        del trainer


@torch.no_grad()
def _output_conditioning(trainer) -> Iterable[CheckResult]:
    """Every teacher's and the student's raw output on a first training batch, in the dtype each runs in, checked for
    a signal too flat to represent (``hf_distill.teachers.flatness_problem``): bf16 turns such maps into constants."""
    batch = trainer.move_batch(next(iter(trainer.get_train_dataloader())))
    views = batch["global_view"]
    mixed = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else None
    student = trainer.accelerator.unwrap_model(trainer.model)
    with trainer.autocast_smart_context_manager():
        depths = (batch["view_depth"], None) if "view_depth" in batch else None  # for teachers that read it
        outputs = [(f"teacher {name}", trainer.run_teacher(index, views, None, False, depths)[0], teacher)
                   for index, (name, teacher) in enumerate(zip(trainer.teacher_names, trainer.teachers))]
        outputs.append(("student", student(normalize_views(views, trainer.student_normalization))[0], student.student))
    for label, maps, module in outputs:
        dtype = mixed or running_dtype(module)
        problem = flatness_problem(maps, dtype)
        yield CheckResult(f"output of {label}", WARN if problem else PASS,
                          problem or f"raw output representable in {str(dtype).removeprefix('torch.')}",
                          "re-condition its head (scripts/make_demo_teacher.py --condition_only shows how) or run "
                          "it in float32" if problem else "")
