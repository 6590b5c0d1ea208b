"""Trainer callbacks: log file, seed-named student exports with best-model tracking, visualisations, epochs."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback

from hf_distill.visualize import colorize_depth, make_grid

logger = logging.getLogger(__name__)

LOGGERS_MIRRORED = ("hf_distill", "transformers")


def export_student(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Write the student's weights (HF key layout, no projectors) to one flat safetensors file; ``state_dict`` is
    the student's, or the trainable module's (``student.*`` keys are kept, the projectors dropped)."""
    if any(k.startswith("student.") for k in state_dict):
        state_dict = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
    state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    temporary = path.with_name(path.name + ".tmp")
    save_file(state, str(temporary), metadata={"format": "pt"})
    os.replace(temporary, path)  # a kill while writing never leaves a truncated export under the real name


class LogFileCallback(TrainerCallback):
    """Mirror the console into ``output_dir/train.log``: library log records and every logged metrics dict."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handler: logging.Handler | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in LOGGERS_MIRRORED:
            logging.getLogger(name).addHandler(self._handler)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if self._handler is not None:
            for name in LOGGERS_MIRRORED:
                logging.getLogger(name).removeHandler(self._handler)
            self._handler.close()
            self._handler = None


class StudentExportCallback(TrainerCallback):
    """The seed's flat files beside the student folder: ``student_checkpoint_{step}.safetensors`` at every save,
    ``student_best.safetensors`` whenever the evaluation metric improves, ``student_final.safetensors`` at the end.

    Args:
        student_state_dict: returns the student's full weights on the main process (None elsewhere); called on every
            rank, as gathering sharded (ZeRO-3) weights is a collective.
    """

    def __init__(self, student_state_dict: Callable[[], dict[str, torch.Tensor] | None]) -> None:
        self.student_state_dict = student_state_dict
        self.best: float | None = None

    def _export(self, path: Path) -> None:
        state = self.student_state_dict()
        if state is not None:
            export_student(state, path)

    def on_train_begin(self, args, state, control, **kwargs):
        self.best = state.best_metric  # restored from trainer_state.json on resume

    def on_save(self, args, state, control, **kwargs):
        self._export(Path(args.output_dir) / f"student_checkpoint_{state.global_step}.safetensors")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model or "abs_rel"
        key = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(key)
        if value is None or not math.isfinite(value):
            return
        better = self.best is None or (value > self.best if args.greater_is_better else value < self.best)
        if better:  # the same on every rank: evaluation metrics are gathered
            self.best = value
            self._export(Path(args.output_dir) / "student_best.safetensors")
            if state.is_world_process_zero:
                logger.info("New best %s = %.4f at step %d: wrote student_best.safetensors", key, value,
                            state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self._export(Path(args.output_dir) / "student_final.safetensors")


class VisualizationCallback(TrainerCallback):
    """Every ``visualize_steps``: a PNG grid (global view | teacher | student, and a local patch | its teacher
    prediction | the student's crop) in ``output_dir/visualizations/`` and in the active image trackers."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer  # a DistillationTrainer (its visual_sample)

    def on_step_end(self, args, state, control, **kwargs):
        sample, self.trainer.visual_sample = self.trainer.visual_sample, None
        if sample is None or not state.is_world_process_zero:
            return
        grid = render_visualization(sample)
        folder = Path(args.output_dir) / "visualizations"
        folder.mkdir(parents=True, exist_ok=True)
        grid.save(folder / f"step_{state.global_step:07d}.png")
        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                callback.tb_writer.add_image("visualization", np.asarray(grid), state.global_step,
                                             dataformats="HWC")
        if "trackio" in (args.report_to or []):
            import trackio

            trackio.log({"visualization": trackio.Image(grid)}, step=state.global_step)


def render_visualization(sample: dict[str, torch.Tensor]):
    """Grid of one training sample. ``sample`` holds (3, H, W) views in [0, 1] and (H, W) depth maps."""

    def rgb(view: torch.Tensor) -> np.ndarray:
        return (view.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    rows = [[rgb(sample["global_view"]), colorize_depth(sample["teacher"]), colorize_depth(sample["student"])]]
    labels = [["global view", "teacher", "student"]]
    if "patch_view" in sample:
        rows.append([rgb(sample["patch_view"]), colorize_depth(sample["patch_teacher"]),
                     colorize_depth(sample["patch_student"])])
        labels.append(["local patch", "teacher on patch", "student crop"])
    return make_grid(rows, labels=labels)


class EpochSeedCallback(TrainerCallback):
    """Tell the view dataset which epoch starts, so views are reproducible per (seed, epoch, index) whatever
    sampler accelerate puts in front of it."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(state.epoch or 0))


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimizer steps had a NaN or infinite loss (``--max_nonfinite_steps``)."""


class NonFiniteStepCallback(TrainerCallback):
    """Skip the optimizer step of a step whose loss was NaN or infinite on any rank (``trainer.compute_loss`` flags
    it on the device and poisons its gradients with NaN; the flag is read here, once per optimizer step): every
    gradient is dropped, so the optimizer leaves weights and moments untouched (under DeepSpeed the engine has
    already skipped the step on its NaN gradient norm). Count it, and stop the run with ``NonFiniteLossError``
    after ``--max_nonfinite_steps`` consecutive ones."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer  # a DistillationTrainer (nonfinite_in_step, commit_step_records, nonfinite_steps)
        self.consecutive = 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        flag, trainer.nonfinite_in_step = trainer.nonfinite_in_step, None
        nonfinite = False
        if flag is not None:  # the one host synchronisation of the step: whether any rank saw a non-finite loss
            nonfinite = bool(trainer.accelerator.reduce(flag.float().reshape(1), reduction="sum").item() > 0)
        trainer.commit_step_records(step_was_applied=not nonfinite)
        if not nonfinite:
            self.consecutive = 0
            return
        trainer.model.zero_grad(set_to_none=True)  # params without .grad are skipped by torch optimizers
        trainer.nonfinite_steps += 1
        self.consecutive += 1
        if state.is_world_process_zero:
            logger.warning("Step %d: non-finite loss (NaN or inf); optimizer step skipped (%d in a row, %d in all)",
                           state.global_step + 1, self.consecutive, trainer.nonfinite_steps)
        if self.consecutive >= args.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive steps had a non-finite loss (NaN or inf), the last at step "
                f"{state.global_step + 1}: a teacher or the student produces NaN/inf (check the teacher weights, "
                f"lower --learning_rate, or raise --max_nonfinite_steps)."
            )
