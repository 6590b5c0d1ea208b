"""The GPU suite's step timer: a run's steps planned in phases from the trainer's teacher draws, and timed, counted
and split from outside the trainer."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

import torch
from torch.utils import flop_counter
from transformers import TrainerCallback

from hf_distill.testing.host_syncs import count_host_syncs
from hf_distill.training.trainer import draw_teacher_index


def register_cpu_sdpa_flops() -> None:
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
    """The teacher index ``DistillationTrainer.draw_teacher`` gives at each of the first ``steps`` steps."""
    return [draw_teacher_index(seed, step, probabilities) for step in range(steps)]


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
    ``run_teacher``, ``loss_fn``): the wrappers read the clock around the original call, synchronise the device
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
        trainer.run_teacher = self._teacher_call(self._timed(trainer.run_teacher, "teacher"))
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
