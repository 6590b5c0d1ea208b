"""``DistillationTrainer``: cross-context distillation from frozen teachers (``hf_distill.teachers``) into a student."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file, save_file
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, get_last_checkpoint, rotate_checkpoints
from transformers.utils.hub import PushInProgress

from hf_distill.data.views import IterableViewDataset
from hf_distill.evaluation.loop import DepthMetrics, EvalAwareCollator
from hf_distill.evaluation.predict import forward_groups, predict_depth_tensors
from hf_distill.hub import README, existing_results, existing_size_speed, upload_student
from hf_distill.losses import DistillationLoss, crop_boxes
from hf_distill.models import mean_std_tensors, normalize_views
from hf_distill.teachers import Teacher, output_spread, spread_problem
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.callbacks import (
    EpochSeedCallback,
    LogFileCallback,
    NonFiniteStepCallback,
    StudentExportCallback,
    VisualizationCallback,
)
from hf_distill.training.card import CardInfo, build_student_card, card_model_name
from hf_distill.training.checkpoints import STAGING_DIR, checkpoint_problem, write_manifest
from hf_distill.training.engines import (
    check_engine_supported,
    fill_zero_bucket_sizes,
    full_state_dict,
    is_zero3,
    prepare_deepspeed_teacher,
)
from hf_distill.training.student import StudentWithProjectors

logger = logging.getLogger(__name__)

PROJECTORS_NAME = "projectors.safetensors"
STREAM_STATE_NAME = "stream_state_{rank}.json"
# Inputs that stay float32 whatever the engine's dtype (DeepSpeed's bf16 would move box corners; ground truth and
# the exact depth oracle teachers read would lose precision).
FLOAT32_INPUTS = ("global_boxes", "references", "view_depth", "local_depth")


class DistillationTrainer(Trainer):
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
        self._student_norm = mean_std_tensors(*student_mean_std)
        self.card_info = card_info or CardInfo(teachers=list(teacher_names))
        self._hub_api: HfApi | None = None

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
        self._stream_positions: dict[int, int] = {}  # streamed data: DataLoader worker -> next raw example
        self._stream_epoch = 0
        self._staging_checkpoint = False
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
                self._resume_stream(folder)
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

    def _draw_teacher(self) -> int:
        """Same teacher on every rank and every micro-batch of a step; reproducible on resume."""
        rng = np.random.default_rng((self.args.seed, self.state.global_step))
        return int(rng.choice(len(self.teachers), p=self.teacher_probabilities))

    @torch.no_grad()
    def _run_teacher(
        self, index: int, global_view: torch.Tensor, local_views: torch.Tensor | None, want_tokens: bool,
        depths: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Teacher disparities on the global view (B, G, G), the patches (B, P, L, L) and its final tokens
        (B, N, C) on the global view. Global view and patches share one forward when their sizes match. ``depths``:
        the exact depth of the global view (B, G, G) and of the patches (B, P, L, L), for a teacher that reads it."""
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

    def _prepare_inputs(self, inputs: dict) -> dict:
        """The Trainer's device placement, except that crop boxes and ground truth (``FLOAT32_INPUTS``) stay float32:
        under DeepSpeed the Trainer casts every floating input to the engine's dtype, and a bf16 box corner lands
        pixels off at SA-1B sizes."""
        kept = {k: inputs[k] for k in FLOAT32_INPUTS if k in inputs}
        prepared = super()._prepare_inputs({k: v for k, v in inputs.items() if k not in kept})
        prepared.update({k: v.to(device=self.args.device, dtype=torch.float32, non_blocking=True)
                         for k, v in kept.items()})
        return prepared

    # ---- loss ---------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One student forward on the global view serves the shared-context, local-global, feature and
        gradient terms; the drawn teacher sees the global view and the local patches. A teacher without encoder
        tokens skips the feature term."""
        teacher_index = self._draw_teacher()
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
        teacher_global, teacher_patches, teacher_tokens = self._run_teacher(
            teacher_index, global_view, local_views, want_tokens, depths
        )
        student_global, student_tokens = model(
            normalize_views(global_view, self._student_norm), teacher_index=teacher_index if want_tokens else None
        )
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
        reads them (:attr:`_stream_positions`): no host read per micro-batch."""
        if "skipped" in inputs:
            self._add_metric("skipped", inputs["skipped"].sum())
        if "stream_position" not in inputs:
            return
        if self.train_dataset.epoch != self._stream_epoch:  # a new pass over the stream starts from its beginning
            self._stream_epoch, self._stream_positions = self.train_dataset.epoch, {}
        position = inputs["stream_position"]
        reached = self.__dict__.get("_stream_reached")  # (workers,) next raw example per worker, on the device
        if reached is None:
            reached = position.new_zeros(max(1, self.args.dataloader_num_workers))
        self._stream_reached = reached.scatter_reduce(0, inputs["stream_worker"], position + 1, "amax")

    @property
    def _stream_positions(self) -> dict[int, int]:
        """Streamed data: DataLoader worker -> next raw example (reads the positions kept on the device once)."""
        positions = self.__dict__.setdefault("_stream_positions_read", {})
        reached = self.__dict__.pop("_stream_reached", None)
        if reached is not None:
            for worker, position in enumerate(reached.tolist()):
                if position > 0:
                    positions[worker] = max(positions.get(worker, 0), position)
        return positions

    @_stream_positions.setter
    def _stream_positions(self, positions: dict[int, int]) -> None:
        self.__dict__.pop("_stream_reached", None)
        self.__dict__["_stream_positions_read"] = positions

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
        inputs = self._prepare_inputs(inputs)
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

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging_checkpoint else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """Write ``checkpoint-N`` atomically: the Trainer's files (student folder, optimizer, scheduler, RNG of every
        rank, trainer state), the projectors, the stream positions and a manifest go to a staging folder that is
        renamed into place when complete; older checkpoints are rotated only after that."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING_DIR / name, run_dir / name
        if self.args.should_save and staged.parent.exists():
            shutil.rmtree(staged.parent)  # what a run killed while saving left
        self.accelerator.wait_for_everyone()
        self._staging_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_checkpoint = False
        if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staged.parent:
            self.state.best_model_checkpoint = str(run_dir / Path(self.state.best_model_checkpoint).name)
        if isinstance(self.train_dataset, IterableViewDataset):
            state = {"epoch": self._stream_epoch, "positions": self._stream_positions}
            rank_file = staged / STREAM_STATE_NAME.format(rank=self.args.process_index)
            rank_file.write_text(json.dumps(state))
        state = self.student_state_dict() if is_zero3(self.accelerator) else None  # collective: every rank
        if self.args.should_save:
            if state is None:
                state = self.accelerator.unwrap_model(self.model).state_dict()
            projectors = {k[len("projectors."):]: v for k, v in state.items() if k.startswith("projectors.")}
            if projectors:
                save_file({k: v.contiguous() for k, v in projectors.items()}, str(staged / PROJECTORS_NAME))
        self.accelerator.wait_for_everyone()  # every rank's files are in the staging folder
        if self.args.should_save:
            write_manifest(staged)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            staged.parent.rmdir()  # empty again
            rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
            if self.args.push_to_hub:
                self._push_student_checkpoint(final)  # complete and in place: safe to upload in the background
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore student and projectors (``from_pretrained`` maps the on-disk key names onto the module's); ``train``
        has checked the checkpoint and positioned streamed data."""
        module = self.accelerator.unwrap_model(model or self.model)
        folder = Path(resume_from_checkpoint)
        saved = type(module.student).from_pretrained(folder, dtype=next(module.student.parameters()).dtype)
        module.student.load_state_dict(saved.state_dict(), strict=True)
        if (folder / PROJECTORS_NAME).is_file():
            module.projectors.load_state_dict(load_file(str(folder / PROJECTORS_NAME)), strict=True)
        elif module.projectors.state_dict():
            raise ValueError(f"Can't resume from {folder}: {PROJECTORS_NAME} is missing.")

    def _resume_stream(self, folder: Path) -> None:
        """Position every worker's stream after its last trained example, so the Trainer need not iterate (decode
        and crop) the batches already seen."""
        rank_file = folder / STREAM_STATE_NAME.format(rank=self.args.process_index)
        if not rank_file.is_file():
            raise ValueError(f"Can't resume streamed data from {folder}: {rank_file.name} is missing (a checkpoint "
                             f"written with another number of processes?).")
        state = json.loads(rank_file.read_text())
        self._stream_epoch = int(state["epoch"])
        self._stream_positions = {int(w): int(p) for w, p in state["positions"].items()}
        self.train_dataset.resume_at(self._stream_positions, epoch=self._stream_epoch)
        self.args.ignore_data_skip = True  # positioned: the Trainer must not skip batches by iterating them

    # ---- model card and Hub ------------------------------------------------------------------------------

    def _render_card(self, model_name: str | None = None) -> ModelCard:
        return build_student_card(
            self.card_info, self.args, model_name=model_name or card_model_name(self.args, self.hub_model_id),
            state=self.state, existing=existing_results(self.args.output_dir),
            size_speed=existing_size_speed(self.args.output_dir),
        )

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Render the student's card into ``output_dir/README.md`` (see ``hf_distill.training.card``): named after
        ``--hub_model_id`` (else the repository pushed to, else the output folder), with the best and last
        training-time evaluation in its model-index beside the entries ``scripts/evaluate.py`` wrote. The generic
        Trainer card arguments (language, tags, ...) are not used."""
        if self.is_world_process_zero():
            self._render_card(model_name).save(os.path.join(self.args.output_dir, README))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ) -> str | None:
        """Save the student folder and its card, wait for pending checkpoint pushes and upload, in one commit, the
        student (config, weights, processor, README.md) and nothing else. Returns the commit URL (None off the main
        process). The upload always blocks; ``kwargs`` go to ``create_model_card``."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)  # not save_model(): with push_to_hub set, it would push again
        self.create_model_card(**kwargs)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        output_dir = Path(self.args.output_dir)
        commit = upload_student(self.hub_model_id, output_dir, output_dir / README, token=token,
                                revision=revision or self.args.hub_revision, commit_message=commit_message)
        return str(commit.commit_url)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Uploads nothing: the Trainer calls it inside ``_save_checkpoint`` before the projectors are written, and
        its upload is all of ``output_dir`` (flat exports, visualisations, logs); ``_save_checkpoint`` pushes through
        ``_push_student_checkpoint`` once the checkpoint is complete. The Trainer rotates old checkpoints right after
        this call: with ``--save_total_limit``, a running upload is awaited so that its checkpoint is not deleted
        while it is read."""
        if self.args.save_total_limit is not None:
            self._finish_current_push()

    def _push_student_checkpoint(self, checkpoint_folder: Path) -> None:
        """Push at a save, in the background, as ``--hub_strategy`` says: ``every_save`` uploads the checkpoint's
        student (config, weights, processor) with the current card; ``checkpoint`` adds the whole checkpoint as
        ``last-checkpoint/`` and ``all_checkpoints`` as ``checkpoint-{step}/`` (resumable with
        ``--resume_from_checkpoint``); ``end`` pushes nothing before the end. As in the Trainer, a save is skipped
        while the previous push is running unless ``--hub_always_push``."""
        strategy = self.args.hub_strategy
        if not self.is_world_process_zero() or strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        path_in_repo = {HubStrategy.CHECKPOINT: "last-checkpoint",
                        HubStrategy.ALL_CHECKPOINTS: checkpoint_folder.name}.get(strategy)
        if self._hub_api is None:
            self._hub_api = HfApi()
        job = self._hub_api.run_as_future(
            upload_student, self.hub_model_id, checkpoint_folder, str(self._render_card()),
            checkpoint=checkpoint_folder if path_in_repo else None, checkpoint_path_in_repo=path_in_repo,
            token=self.args.hub_token, revision=self.args.hub_revision,
            commit_message=f"Training in progress, step {self.state.global_step}",
        )
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress([job])
        else:
            self.push_in_progress.jobs.append(job)


def running_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a module computes in outside autocast: its parameters', float32 for one without (an oracle)."""
    parameter = next(module.parameters(), None)
    return torch.float32 if parameter is None else parameter.dtype
