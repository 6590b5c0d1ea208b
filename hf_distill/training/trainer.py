"""``DistillationTrainer``: cross-context distillation from frozen Depth Anything teachers into a student."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DepthAnythingForDepthEstimation, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_distill.evaluation.metrics import batch_depth_metrics
from hf_distill.hub import build_model_card, push_student_to_hub
from hf_distill.losses import DistillationLoss, crop_boxes
from hf_distill.models import EncoderTokenTap
from hf_distill.training.arguments import DistillationArguments
from hf_distill.training.callbacks import (
    EpochSeedCallback,
    LogFileCallback,
    StudentExportCallback,
    VisualizationCallback,
)
from hf_distill.training.student import StudentWithProjectors

logger = logging.getLogger(__name__)

PROJECTORS_NAME = "projectors.safetensors"


class DistillationTrainer(Trainer):
    """Trains ``model.student`` to match one of ``teachers`` per step on cross-context views.

    Args:
        model: the trainable module (student + projectors).
        teachers: frozen teacher networks; held as plain attributes, never as submodules.
        teacher_names: one display name per teacher (logs and model card).
        teacher_mean_std / student_mean_std: each model's own input normalisation, applied to [0, 1] views.
        teacher_probabilities: per-step teacher sampling probabilities.
        args: the run configuration.
        card_info: what the model card should say about teachers, data and initialisation.
        Remaining arguments are those of ``transformers.Trainer``.
    """

    def __init__(
        self,
        model: StudentWithProjectors,
        teachers: list[DepthAnythingForDepthEstimation],
        args: DistillationArguments,
        *,
        teacher_names: list[str],
        teacher_mean_std: list[tuple[list[float], list[float]]],
        student_mean_std: tuple[list[float], list[float]],
        teacher_probabilities: list[float] | None = None,
        teacher_dtype: torch.dtype = torch.float32,
        card_info: dict | None = None,
        **kwargs,
    ) -> None:
        if args.ddp_find_unused_parameters is None:
            # Structurally unused student parameters are frozen; only a per-step teacher choice among several
            # projectors leaves trainable parameters without gradient.
            args.ddp_find_unused_parameters = model.has_unused_projectors()
        super().__init__(model=model, args=args, **kwargs)
        # The loss is a per-batch mean: let the Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False

        self.loss_fn = DistillationLoss(
            lambda_sc=args.lambda_sc,
            lambda_lg=args.lambda_lg,
            lambda_feat=args.lambda_feat,
            lambda_grad=args.lambda_grad,
            lambda_hdn=args.lambda_hdn,
            normalization=args.normalization,
            hdn_variant=args.hdn_variant,
            hdn_levels=args.hdn_levels,
            hdn_loss_variant=args.hdn_loss_variant,
            hdn_loss_levels=args.hdn_loss_levels,
            feature_margin=args.feature_margin,
        )
        self.teacher_names = teacher_names
        self.teacher_probabilities = teacher_probabilities or [1.0 / len(teachers)] * len(teachers)
        # Taps attach before the teachers are prepared (and compiled with --torch_compile): see EncoderTokenTap.
        self._teacher_taps = [EncoderTokenTap(t) for t in teachers] if args.lambda_feat > 0 else None
        self.teachers = [self._prepare_teacher(t, teacher_dtype) for t in teachers]
        self._teacher_norm = [_mean_std_tensors(*ms) for ms in teacher_mean_std]
        self._student_norm = _mean_std_tensors(*student_mean_std)
        self.card_info = card_info or {}

        self._metrics: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self._metric_counts: dict[str, int] = defaultdict(int)
        self._teacher_counts = [0] * len(teachers)
        self._samples_since_log = 0
        self._skipped_total = 0
        self._last_log_time = time.perf_counter()
        self.visual_sample: dict[str, torch.Tensor] | None = None

        self.add_callback(LogFileCallback(Path(args.output_dir) / "train.log"))
        self.add_callback(StudentExportCallback())
        self.add_callback(VisualizationCallback(self))
        self.add_callback(EpochSeedCallback(self.train_dataset))

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

    def _prepare_teacher(self, teacher: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        teacher = teacher.to(dtype=dtype).eval().requires_grad_(False)
        # DINOv2 attention through torch's fused kernels (flash / memory-efficient); only the backbone has attention.
        teacher.set_attn_implementation({"backbone_config": "sdpa"})
        if self.is_deepspeed_enabled:
            return _prepare_deepspeed_teacher(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _draw_teacher(self) -> int:
        """Same teacher on every rank and every micro-batch of a step; reproducible on resume."""
        rng = np.random.default_rng((self.args.seed, self.state.global_step))
        return int(rng.choice(len(self.teachers), p=self.teacher_probabilities))

    @torch.no_grad()
    def _run_teacher(
        self, index: int, global_view: torch.Tensor, local_views: torch.Tensor | None, want_tokens: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Teacher predictions on the global view (B, G, G), the patches (B, P, L, L) and its final tokens
        (B, N, C) on the global view. Global view and patches share one forward when their sizes match."""
        teacher = self.teachers[index]
        dtype = next(self.accelerator.unwrap_model(teacher).parameters()).dtype
        batch, num_patches = global_view.shape[0], 0 if local_views is None else local_views.shape[1]

        def forward(pixels: torch.Tensor) -> torch.Tensor:
            inputs = normalize_views(pixels, self._teacher_norm[index]).to(dtype)
            return teacher(pixel_values=inputs).predicted_depth.float()

        patches = local_views.flatten(0, 1) if num_patches else None
        batched = patches is not None and patches.shape[-1] == global_view.shape[-1]
        depth = forward(torch.cat([global_view, patches]) if batched else global_view)
        tokens = self._teacher_taps[index].pop()[:batch].float() if want_tokens else None
        teacher_global = depth[:batch]
        if patches is None:
            teacher_patches = None
        else:
            teacher_patches = (depth[batch:] if batched else forward(patches)).unflatten(0, (batch, num_patches))
        return teacher_global, teacher_patches, tokens

    # ---- loss ---------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One student forward on the global view serves the shared-context, local-global, feature and
        gradient terms; the drawn teacher sees the global view and the local patches."""
        teacher_index = self._draw_teacher()
        global_view = inputs["global_view"]
        use_patches = self.args.lambda_lg > 0 and "local_views" in inputs
        local_views = inputs["local_views"] if use_patches else None
        want_tokens = self.args.lambda_feat > 0
        teacher_global, teacher_patches, teacher_tokens = self._run_teacher(
            teacher_index, global_view, local_views, want_tokens
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
            self._record_step(terms, teacher_index, inputs)
            if self._visualization_due():
                self._stash_visual(inputs, teacher_global, student_global, teacher_patches)
        return (total, {"predicted_depth": student_global}) if return_outputs else total

    def _record_step(self, terms: dict[str, torch.Tensor], teacher_index: int, inputs: dict) -> None:
        for name, value in terms.items():
            self._metrics[f"loss_{name}"] = self._metrics[f"loss_{name}"].to(value.device) + value.double()
            self._metric_counts[f"loss_{name}"] += 1
        self._teacher_counts[teacher_index] += 1
        self._samples_since_log += inputs["global_view"].shape[0]
        if "skipped" in inputs:
            self._metrics["skipped"] = self._metrics["skipped"].to(inputs["skipped"].device) + inputs["skipped"].sum()

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
            logs["skipped_samples"] = self._skipped_total
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
        super().log(logs, start_time)

    # ---- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Depth metrics of the student on views with ground truth (``depth``/``depth_valid`` in the batch),
        averaged over images across all ranks."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        student = self.accelerator.unwrap_model(self.model).student
        was_training = student.training
        student.eval()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            with torch.no_grad(), self.compute_loss_context_manager():
                pixels = normalize_views(batch["global_view"], self._student_norm)
                pred = student(pixel_values=pixels).predicted_depth.float()
            per_image = batch_depth_metrics(
                pred, batch["depth"], batch["depth_valid"], alignment=self.args.eval_alignment,
                min_depth=self.args.eval_min_depth, max_depth=self.args.eval_max_depth,
            )
            for name, values in per_image.items():
                values = self.accelerator.gather_for_metrics(values.double())
                finite = torch.isfinite(values)  # an image without valid ground truth has NaN metrics
                sums[name] = sums.get(name, 0) + torch.where(finite, values, 0).sum()
                counts[name] = counts.get(name, 0) + finite.sum()
        student.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": (v / counts[k].clamp(min=1)).item() for k, v in sums.items()}
        metrics[f"{metric_key_prefix}_num_samples"] = int(counts["abs_rel"].item()) if counts else 0
        metrics[f"{metric_key_prefix}_runtime"] = time.perf_counter() - start
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    # ---- saving -------------------------------------------------------------------------------------------

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

    def _save_checkpoint(self, model, trial) -> None:
        """A checkpoint is a loadable student folder plus the projectors, optimizer, scheduler and RNG state."""
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            projectors = self.accelerator.unwrap_model(self.model).projectors.state_dict()
            if projectors:
                save_file({k: v.contiguous() for k, v in projectors.items()}, str(folder / PROJECTORS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore student and projectors; ``from_pretrained`` maps the on-disk key names onto the module's."""
        module = self.accelerator.unwrap_model(model or self.model)
        folder = Path(resume_from_checkpoint)
        if not (folder / "model.safetensors").is_file():
            raise ValueError(f"Can't resume from {folder}: no model.safetensors in it.")
        saved = type(module.student).from_pretrained(folder, dtype=next(module.student.parameters()).dtype)
        module.student.load_state_dict(saved.state_dict(), strict=True)
        if (folder / PROJECTORS_NAME).is_file():
            module.projectors.load_state_dict(load_file(str(folder / PROJECTORS_NAME)), strict=True)
        elif module.projectors.state_dict():
            raise ValueError(f"Can't resume from {folder}: {PROJECTORS_NAME} is missing.")

    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Render the student's model card into ``output_dir/README.md``."""
        if not self.is_world_process_zero():
            return
        args = self.args
        hyperparameters = {
            "normalization": args.normalization, "hdn_variant": args.hdn_variant, "hdn_levels": args.hdn_levels,
            "lambda_sc": args.lambda_sc, "lambda_lg": args.lambda_lg, "lambda_feat": args.lambda_feat,
            "lambda_grad": args.lambda_grad, "lambda_hdn": args.lambda_hdn, "learning_rate": args.learning_rate,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "world_size": args.world_size, "max_steps": self.state.max_steps, "seed": args.seed,
            **self.card_info.get("hyperparameters", {}),
        }
        card = build_model_card(
            model_name=model_name or self.card_info.get("model_name") or Path(args.output_dir).name,
            base_model=self.card_info.get("base_model"),
            teachers=self.teacher_names,
            datasets=self.card_info.get("datasets"),
            hyperparameters=hyperparameters,
            eval_results=self.card_info.get("eval_results"),
        )
        card.save(os.path.join(args.output_dir, "README.md"))


    def push_to_hub(self, commit_message: str | None = "End of training", **kwargs) -> str | None:
        """Upload the student folder and its card (not checkpoints, exports or visualisations)."""
        self.save_model()
        self.create_model_card()
        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).name
        return push_student_to_hub(self.args.output_dir, repo_id, token=self.args.hub_token,
                                   private=self.args.hub_private_repo, commit_message=commit_message)


def normalize_views(views: torch.Tensor, mean_std: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(N, 3, H, W) views in [0, 1] -> a model's input normalisation ``(views - mean) / std``."""
    mean, std = (t.to(views.device) for t in mean_std)
    return (views - mean) / std


def _mean_std_tensors(mean: list[float], std: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


def _prepare_deepspeed_teacher(teacher: torch.nn.Module, accelerator) -> torch.nn.Module:
    """Wrap a frozen teacher in an inference DeepSpeed engine (ZeRO-3 shards it; other stages replicate it)."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    if config["zero_optimization"]["stage"] != 3:
        config["zero_optimization"]["stage"] = 0
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine
