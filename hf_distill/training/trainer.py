"""``DistillationTrainer``: cross-context distillation from frozen teachers (``hf_distill.teachers``) into a student."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from hf_distill.data.views import IterableViewDataset
from hf_distill.evaluation.loop import DepthMetrics, EvalAwareCollator
from hf_distill.evaluation.predict import forward_groups, predict_depth_tensors
from hf_distill.losses import DistillationLoss, crop_boxes
from hf_distill.models import mean_std_tensors, normalize_views
from hf_distill.teachers import Teacher, output_spread, running_dtype, spread_problem
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.callbacks import (
    EpochSeedCallback,
    LogFileCallback,
    NonFiniteStepCallback,
    StudentExportCallback,
    VisualizationCallback,
)
from hf_distill.training.card import CardInfo
from hf_distill.training.checkpoints import AtomicCheckpointMixin, checkpoint_problem
from hf_distill.training.engines import (
    check_engine_supported,
    fill_zero_bucket_sizes,
    full_state_dict,
    is_zero3,
    prepare_deepspeed_teacher,
)
from hf_distill.training.push import StudentPushMixin
from hf_distill.training.stream_state import StreamState
from hf_distill.training.student import StudentWithProjectors

logger = logging.getLogger(__name__)

# Inputs that stay float32 whatever the engine's dtype (DeepSpeed's bf16 would move box corners; ground truth and
# the exact depth oracle teachers read would lose precision).
FLOAT32_INPUTS = ("global_boxes", "references", "view_depth", "local_depth")


class DistillationTrainer(StudentPushMixin, AtomicCheckpointMixin, Trainer):
    """Trains ``model.student`` to match one of ``teachers`` per step on cross-context views.

    Args:
        model: the trainable module (student + projectors).
        teachers: frozen teachers (``hf_distill.teachers.Teacher``: [0, 1] views in, disparity out, their own
            preprocessing); held as plain attributes, never as submodules.
        teacher_names: one display name per teacher (logs and model card).
        student_mean_std: the student's input normalisation, applied to [0, 1] views.
        teacher_probabilities: per-step teacher sampling probabilities.
        args: the run configuration.
        card_info: what the model card says about teachers, initial weights and data (``CardInfo``).
        Remaining arguments are those of ``transformers.Trainer``. ``eval_dataset`` holds whole-image samples
        (``EvalSampleDataset``) scored as ``scripts/evaluate.py`` scores them; ``compute_metrics`` defaults to
        ``DepthMetrics`` with the evaluation data's depth range (else ``--eval_min_depth``/``--eval_max_depth``).
    """

    def __init__(
        self,
        model: StudentWithProjectors,
        teachers: list[Teacher],
        args: DistillationArguments,
        *,
        teacher_names: list[str],
        student_mean_std: tuple[list[float], list[float]],
        teacher_probabilities: list[float] | None = None,
        teacher_dtype: torch.dtype = torch.float32,
        card_info: CardInfo | None = None,
        **kwargs,
    ) -> None:
        if args.ddp_find_unused_parameters is None:
            # Structurally unused student parameters are frozen; only a per-step teacher choice among several
            # projectors leaves trainable parameters without gradient.
            args.ddp_find_unused_parameters = model.has_unused_projectors()
        kwargs["data_collator"] = EvalAwareCollator(kwargs.get("data_collator"))
        if kwargs.get("compute_metrics") is None:
            eval_data = kwargs.get("eval_dataset")
            kwargs["compute_metrics"] = DepthMetrics(
                alignment=args.eval_alignment,
                min_depth=getattr(eval_data, "min_depth", args.eval_min_depth),
                max_depth=getattr(eval_data, "max_depth", args.eval_max_depth),
            )
        super().__init__(model=model, args=args, **kwargs)
        check_engine_supported(self.accelerator, args)
        # The loss is a per-batch mean: let the Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False

        self.loss_fn = DistillationLoss.from_config(args)
        self.teacher_names = teacher_names
        self.teacher_probabilities = teacher_probabilities or [1.0 / len(teachers)] * len(teachers)
        self._teacher_has_tokens = [t.token_width is not None for t in teachers]
        self._teacher_needs_depth = [t.needs_depth for t in teachers]
        if args.lambda_feat > 0:
            for name, has_tokens in zip(teacher_names, self._teacher_has_tokens):
                if not has_tokens:
                    logger.info("Teacher %s gives no encoder tokens: steps drawn for it skip the feature term "
                                "(logged as feat_skipped).", name)
        self.teachers = [self._prepare_teacher(t, teacher_dtype) for t in teachers]
        if self.is_deepspeed_enabled:  # after the teachers, whose engines fill these from their own sizes
            fill_zero_bucket_sizes(self.accelerator.state.deepspeed_plugin.hf_ds_config.config,
                                   model.student.config.backbone_config.hidden_size)
        self.student_normalization = mean_std_tensors(*student_mean_std)  # MeanStd: (1, 3, 1, 1) mean and std
        self.card_info = card_info or CardInfo(teachers=list(teacher_names))

        self._metrics: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self._metric_counts: dict[str, int] = defaultdict(int)
        self._teacher_counts = [0] * len(teachers)
        self._samples_since_log = 0
        self._skipped_total = 0
        self._last_log_time = time.perf_counter()
        self.visual_sample: dict[str, torch.Tensor] | None = None
        self.nonfinite_in_step: torch.Tensor | None = None  # on the device; set by compute_loss, read once per step
        self._pending_records: list[tuple[dict[str, torch.Tensor], int, int]] = []  # committed if the step is finite
        self.nonfinite_steps = 0
        self.stream_state = StreamState()  # streamed data: each DataLoader worker's next raw example
        self._flatness_checked: set[int | str] = set()  # teachers (by index) and "student" checked on a first batch
        self._flatness_pending: list[tuple[str, torch.Tensor, torch.dtype]] = []  # reported at the next log

        self.add_callback(LogFileCallback(Path(args.output_dir) / "train.log"))
        self.add_callback(StudentExportCallback(self.student_state_dict))
        self.add_callback(VisualizationCallback(self))
        self.add_callback(EpochSeedCallback(self.train_dataset))
        self.add_callback(NonFiniteStepCallback(self))

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """The Trainer's ``train``; a checkpoint to resume from is first checked to be complete (its manifest covers
        every file, DeepSpeed's included) and streamed data is positioned after its last trained example, on every
        engine (under DeepSpeed the Trainer restores weights through ``deepspeed_load_checkpoint``, not through
        ``_load_from_checkpoint``)."""
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if resume_from_checkpoint:
            folder = Path(resume_from_checkpoint)
            problem = checkpoint_problem(folder)
            if problem is not None:
                raise ValueError(f"Can't resume from {folder}: {problem}.")
            if isinstance(self.train_dataset, IterableViewDataset):
                # Positioned after the last trained example: the Trainer need not iterate (decode and crop) the
                # batches already seen.
                self.stream_state.load(folder, self.args.process_index)
                self.train_dataset.resume_at(self.stream_state.positions, epoch=self.stream_state.epoch)
                self.args.ignore_data_skip = True
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """Streamed views split themselves by rank and worker (``IterableViewDataset``): accelerate must neither
        dispatch them from rank 0 nor re-shard them, so their loader is built here. Map-style data goes through
        the Trainer (distributed sampler, seeded shuffling, resumable skipping)."""
        if not isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            return super().get_train_dataloader()
        return torch.utils.data.DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            drop_last=True,
        )

    # ---- teachers -----------------------------------------------------------------------------------------

    def _prepare_teacher(self, teacher: Teacher, dtype: torch.dtype) -> torch.nn.Module:
        teacher = teacher.to(dtype=dtype).eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed_teacher(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def draw_teacher(self) -> int:
        """The index into ``teachers`` of this step's teacher, drawn with ``teacher_probabilities`` from
        ``(args.seed, state.global_step)``: the same on every rank and every micro-batch of a step, reproducible on
        resume."""
        return draw_teacher_index(self.args.seed, self.state.global_step, self.teacher_probabilities)

    @torch.no_grad()
    def run_teacher(
        self, index: int, global_view: torch.Tensor, local_views: torch.Tensor | None, want_tokens: bool,
        depths: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Run teacher ``index`` (no gradient) on a batch's views, [0, 1] RGB: ``global_view`` (B, 3, G, G) and
        ``local_views`` (B, P, 3, L, L) or None. Global view and patches share one forward when their sizes match.

        Args:
            want_tokens: also return the teacher's final encoder tokens on the global view (it must have them).
            depths: the exact depth of the global view (B, G, G) and of the patches (B, P, L, L) or None, for a
                teacher that reads it (an oracle).
        Returns:
            The disparity on the global view (B, G, G), on the patches (B, P, L, L) or None, and the tokens
            (B, N, C) float32 or None.
        """
        teacher = self.teachers[index]
        batch, num_patches = global_view.shape[0], 0 if local_views is None else local_views.shape[1]
        patches = local_views.flatten(0, 1) if num_patches else None
        global_depth, patch_depth = depths if depths is not None else (None, None)
        patch_depth = patch_depth.flatten(0, 1) if num_patches and patch_depth is not None else None

        def run(views, depth, tokens=False):
            return teacher(views, want_tokens=tokens, **({} if depth is None else {"depth": depth}))

        batched = patches is not None and patches.shape[-1] == global_view.shape[-1]
        if batched:
            both = None if global_depth is None else torch.cat([global_depth, patch_depth])
            depth, tokens = run(torch.cat([global_view, patches]), both, want_tokens)
        else:
            depth, tokens = run(global_view, global_depth, want_tokens)
        tokens = tokens[:batch].float() if want_tokens else None  # cast the global view's tokens only
        teacher_global = depth[:batch]
        if patches is None:
            teacher_patches = None
        else:
            teacher_patches = (depth[batch:] if batched else run(patches, patch_depth)[0]).unflatten(
                0, (batch, num_patches))
        return teacher_global, teacher_patches, tokens

    def move_batch(self, inputs: dict) -> dict:
        """A collated batch (``collate_views``: ``global_view`` (B, 3, G, G), ``local_views`` (B, P, 3, L, L),
        ``global_boxes`` (B, P, 4), ...) on the training device: the Trainer's placement and casting, except that crop
        boxes and ground truth (``FLOAT32_INPUTS``) stay float32: under DeepSpeed the Trainer casts every floating
        input to the engine's dtype, and a bf16 box corner lands pixels off at SA-1B sizes."""
        kept = {k: inputs[k] for k in FLOAT32_INPUTS if k in inputs}
        prepared = super()._prepare_inputs({k: v for k, v in inputs.items() if k not in kept})
        prepared.update({k: v.to(device=self.args.device, dtype=torch.float32, non_blocking=True)
                         for k, v in kept.items()})
        return prepared

    def _prepare_inputs(self, inputs: dict) -> dict:
        """The Trainer's hook for device placement: ``move_batch``."""
        return self.move_batch(inputs)

    # ---- loss ---------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One student forward on the global view serves the shared-context, local-global, feature and
        gradient terms; the drawn teacher sees the global view and the local patches. A teacher without encoder
        tokens skips the feature term."""
        teacher_index = self.draw_teacher()
        global_view = inputs["global_view"]
        use_patches = self.args.lambda_lg > 0 and "local_views" in inputs
        local_views = inputs["local_views"] if use_patches else None
        want_tokens = self.args.lambda_feat > 0 and self._teacher_has_tokens[teacher_index]
        depths = None
        if self._teacher_needs_depth[teacher_index]:
            if "view_depth" not in inputs:
                raise ValueError(f"teacher {self.teacher_names[teacher_index]} reads the exact depth of its views, "
                                 "but the batches carry none (views sampled without view_depth)")
            depths = (inputs["view_depth"], inputs["local_depth"] if use_patches else None)
        teacher_global, teacher_patches, teacher_tokens = self.run_teacher(
            teacher_index, global_view, local_views, want_tokens, depths
        )
        student_global, student_tokens = model(normalize_views(global_view, self.student_normalization),
                                               teacher_index=teacher_index if want_tokens else None)
        total, terms = self.loss_fn(
            student_global,
            teacher_global,
            teacher_patches=teacher_patches,
            global_boxes=inputs["global_boxes"] if use_patches else None,
            student_tokens=student_tokens,
            teacher_tokens=teacher_tokens,
        )
        if model.training:
            self._warn_if_flat(teacher_index, teacher_global, student_global)
            total = self._nan_gradient_loss(total, self._loss_is_nonfinite(total))
            terms = {name: value.detach() for name, value in terms.items()}
            self._pending_records.append((terms, teacher_index, inputs["global_view"].shape[0]))
            self._record_consumed_data(inputs)
            if self._visualization_due():
                self._stash_visual(inputs, teacher_global, student_global, teacher_patches)
        return (total, {"predicted_depth": student_global}) if return_outputs else total

    def _warn_if_flat(self, teacher_index: int, teacher_global: torch.Tensor, student_global: torch.Tensor) -> None:
        """On each teacher's first batch and the student's, measure (main process) how flat the raw maps are for the
        dtype they run in (``hf_distill.teachers.output_spread``), on the device: the warning is given at the next
        logging step (``_report_flatness``), so no step waits on the host for it."""
        pending = [key for key in (teacher_index, "student") if key not in self._flatness_checked]
        if not pending or not self.is_world_process_zero():
            return
        mixed = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
        for key in pending:
            self._flatness_checked.add(key)
            if key == "student":
                label, maps, module = "The student", student_global, self.accelerator.unwrap_model(self.model).student
            else:
                label, maps, module = f"Teacher {self.teacher_names[key]}", teacher_global, self.teachers[key]
            self._flatness_pending.append((label, output_spread(maps), mixed or running_dtype(module)))

    def _report_flatness(self) -> None:
        for label, spread, dtype in self._flatness_pending:
            problem = spread_problem(float(spread), dtype)
            if problem is not None:
                logger.warning("%s: %s", label, problem)
        self._flatness_pending.clear()

    def _loss_is_nonfinite(self, total: torch.Tensor) -> torch.Tensor:
        """Whether this micro-batch's loss is NaN/inf, as a bool tensor on the device (no host synchronisation);
        folded into ``nonfinite_in_step``, which ``NonFiniteStepCallback`` reads once per optimizer step."""
        nonfinite = ~torch.isfinite(total.detach())
        self.nonfinite_in_step = nonfinite if self.nonfinite_in_step is None else self.nonfinite_in_step | nonfinite
        return nonfinite

    @staticmethod
    def _nan_gradient_loss(total: torch.Tensor, nonfinite: torch.Tensor) -> torch.Tensor:
        """``total`` itself, except that a non-finite one is multiplied by NaN so that every gradient it reaches is
        NaN, whatever made it non-finite (a NaN teacher map can otherwise give finite student gradients).

        The gradients then decide on every rank and engine that nothing is learnt from the step: DDP averages the NaN
        into every rank's gradients; DeepSpeed (ZeRO-1/2/3, fp32 or bf16) finds a non-finite gradient norm inside
        ``engine.step()``, which accelerate runs within ``training_step``, and skips the step, leaving weights, Adam
        moments, step count and weight decay untouched; without DeepSpeed ``NonFiniteStepCallback`` drops the
        gradients before ``optimizer.step()``. No parameter is touched outside the forward (ZeRO-3 partitions them).
        """
        return total * torch.where(nonfinite, torch.full_like(total, float("nan")), torch.ones_like(total))

    def _prepare_input(self, data):
        """As the Trainer's, with host-to-device copies that do not make the host wait: the loader's batches are in
        pinned memory (``dataloader_pin_memory``), so the host queues the copy and goes on."""
        if isinstance(data, torch.Tensor) and data.device.type == "cpu" and self.args.device.type != "cpu":
            kwargs = {"device": self.args.device, "non_blocking": True}
            if self.is_deepspeed_enabled and (torch.is_floating_point(data) or torch.is_complex(data)):
                kwargs["dtype"] = self.accelerator.state.deepspeed_plugin.hf_ds_config.dtype()
            return data.to(**kwargs)
        return super()._prepare_input(data)

    def _record_consumed_data(self, inputs: dict) -> None:
        """Count the broken samples the batch skipped (also on a skipped step). Streamed batches carry each sample's
        raw position in its worker's stream: the checkpoint keeps where every worker's next unseen example is, so a
        resume continues there without re-reading the stream. The positions stay on the device until a checkpoint
        reads them (``StreamState``): no host read per micro-batch."""
        if "skipped" in inputs:
            self._add_metric("skipped", inputs["skipped"].sum())
        if "stream_position" not in inputs:
            return
        self.stream_state.record(inputs["stream_position"], inputs["stream_worker"], self.train_dataset.epoch,
                                 self.args.dataloader_num_workers)

    def _add_metric(self, name: str, value: torch.Tensor) -> None:
        """Accumulate a per-step statistic on the device of ``value`` (float64, read at logging steps); a window's
        first value starts the sum there instead of copying a host zero to the device."""
        total = self._metrics.get(name)
        self._metrics[name] = value.double() if total is None else total.to(value.device) + value.double()

    def commit_step_records(self, step_was_applied: bool) -> None:
        """Count the per-term losses and teacher draws of the micro-batches of a step that was applied; those of a
        skipped (non-finite) step are dropped."""
        if step_was_applied:
            for terms, teacher_index, batch in self._pending_records:
                self._record_step(terms, teacher_index, batch)
        self._pending_records.clear()

    def _record_step(self, terms: dict[str, torch.Tensor], teacher_index: int, batch: int) -> None:
        for name, value in terms.items():
            self._add_metric(f"loss_{name}", value)
            self._metric_counts[f"loss_{name}"] += 1
        if self.args.lambda_feat > 0:  # logged as the fraction of steps whose teacher had no tokens
            self._metrics["feat_skipped"] += float(not self._teacher_has_tokens[teacher_index])
            self._metric_counts["feat_skipped"] += 1
        self._teacher_counts[teacher_index] += 1
        self._samples_since_log += batch

    def _visualization_due(self) -> bool:
        steps = self.args.visualize_steps
        # global_step counts finished steps: this batch belongs to step global_step + 1.
        return bool(steps) and (self.state.global_step + 1) % steps == 0 and self.visual_sample is None \
            and self.is_world_process_zero()

    def _stash_visual(self, inputs, teacher_global, student_global, teacher_patches) -> None:
        sample = {
            "global_view": inputs["global_view"][0],
            "teacher": teacher_global[0],
            "student": student_global[0],
        }
        if teacher_patches is not None:
            size = tuple(teacher_patches.shape[-2:])
            sample["patch_view"] = inputs["local_views"][0, 0]
            sample["patch_teacher"] = teacher_patches[0, 0]
            sample["patch_student"] = crop_boxes(student_global[:1], inputs["global_boxes"][:1, :1], size)[0, 0]
        self.visual_sample = {k: v.detach().float().cpu() for k, v in sample.items()}

    # ---- logging ------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add per-term losses (averaged over steps and ranks), teacher frequencies, samples/s and the count of
        skipped broken samples to the Trainer's training logs."""
        self._report_flatness()
        if "loss" in logs and self._metric_counts:
            names = sorted(self._metrics)
            device = self.args.device
            local = torch.stack([self._metrics[n].to(device) for n in names]).float()
            total = self.accelerator.reduce(local, reduction="sum")
            for name, value in zip(names, total.tolist()):
                if name == "skipped":
                    self._skipped_total += int(value)
                else:
                    logs[name] = value / (self._metric_counts[name] * self.accelerator.num_processes)
            steps = max(sum(self._teacher_counts), 1)
            for name, count in zip(self.teacher_names, self._teacher_counts):
                logs[f"teacher_frac/{name}"] = count / steps
            now = time.perf_counter()
            logs["samples_per_second"] = self._samples_since_log * self.accelerator.num_processes / max(
                now - self._last_log_time, 1e-9
            )
            self._last_log_time, self._samples_since_log = now, 0
            self._metrics.clear()
            self._metric_counts.clear()
            self._teacher_counts = [0] * len(self.teachers)
        elif "train_runtime" in logs:  # the final summary: count what was skipped since the last log too
            pending = self._metrics.pop("skipped", torch.zeros((), dtype=torch.float64)).to(self.args.device)
            self._skipped_total += int(self.accelerator.reduce(pending.float().reshape(1), reduction="sum").item())
        if "loss" in logs or "train_runtime" in logs:
            logs["skipped_samples"] = self._skipped_total
            logs["nonfinite_steps"] = self.nonfinite_steps
        super().log(logs, start_time)

    # ---- evaluation ---------------------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """One batch of whole-image evaluation samples (``collate_eval_samples``), predicted as ``scripts/evaluate.py``
        predicts: at the processor's resolution, in float32, each prediction resized (bicubic) to its ground truth.

        Returns ``(None, predictions, references)``, both (B, H, W) with the references' zero padding; metrics are
        ``compute_metrics``'s (``DepthMetrics``), so ``evaluate()``, ``predict()``, ``eval_*`` logs, callbacks and
        ``metric_for_best_model`` behave as in any Trainer.
        """
        if "references" not in inputs:
            raise ValueError("evaluation batches hold whole images with ground truth: give the trainer an "
                             "EvalSampleDataset (hf_distill.evaluation.loop) as eval_dataset")
        if prediction_loss_only:
            return None, None, None
        if self.processing_class is None:
            raise ValueError("evaluation needs the student's image processor: pass processing_class")
        inputs = self.move_batch(inputs)
        references = inputs["references"]
        student = self.accelerator.unwrap_model(model).student
        predictions = references.new_zeros(references.shape)
        num_forwards = None
        if is_zero3(self.accelerator):  # sharded weights: every rank runs as many forwards as the busiest one
            local = torch.tensor([len(forward_groups(inputs["images"]))], device=self.args.device)
            num_forwards = int(self.accelerator.gather(local).max().item())
        for out, prediction in zip(predictions, predict_depth_tensors(student, self.processing_class, inputs["images"],
                                                                      num_forwards=num_forwards)):
            out[: prediction.shape[0], : prediction.shape[1]] = prediction
        # The Trainer pads maps across processes along dim 1 only before gathering them: widths are matched here.
        predictions = self.accelerator.pad_across_processes(predictions, dim=2)
        references = self.accelerator.pad_across_processes(references, dim=2)
        return None, predictions, references

    # ---- saving -------------------------------------------------------------------------------------------

    def student_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The trainable module's full weights (student and projectors, gathered under ZeRO-3) on the main process,
        None elsewhere. A collective: call it on every rank."""
        return full_state_dict(self.accelerator, self.model)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under ZeRO-3 the student folder gets the gathered weights whatever
        ``stage3_gather_16bit_weights_on_model_save`` says (the Trainer would otherwise leave DeepSpeed's engine files
        in the student folder instead of weights); engine files go only into ``checkpoint-*/``."""
        if not is_zero3(self.accelerator):
            return super().save_model(output_dir, _internal_call=_internal_call)
        state_dict = self.student_state_dict()
        self._save(output_dir, state_dict=state_dict)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write only the student as a ``from_pretrained`` folder (config, weights, processor, args)."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        student = self.accelerator.unwrap_model(self.model).student
        if state_dict is not None:
            state_dict = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
        student.save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))



def draw_teacher_index(seed: int, step: int, probabilities: list[float]) -> int:
    """The teacher index drawn at optimizer step ``step`` of a run seeded ``seed``, teachers drawn with
    ``probabilities`` (``DistillationTrainer.draw_teacher``; known before training, e.g. to plan a benchmark)."""
    rng = np.random.default_rng((seed, step))
    return int(rng.choice(len(probabilities), p=probabilities))
