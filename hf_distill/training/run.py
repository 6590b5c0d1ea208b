"""Assemble and run a distillation job from its three argument dataclasses (what ``scripts/distill.py`` calls)."""

from __future__ import annotations

import logging
import math

import torch
from transformers import set_seed

from hf_distill.data import ViewSampler, build_view_dataset, collate_views
from hf_distill.hub import display_name
from hf_distill.models import image_mean_std, load_depth_model, load_image_processor
from hf_distill.teachers import build_teacher, teacher_needs_depth
from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments
from hf_distill.training.card import CardInfo
from hf_distill.training.checkpoints import last_complete_checkpoint
from hf_distill.training.data import build_eval_dataset, build_training_source
from hf_distill.training.engines import whole_models
from hf_distill.training.student import StudentWithProjectors
from hf_distill.training.trainer import DistillationTrainer

logger = logging.getLogger(__name__)


def resolve_teacher_dtype(name: str) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def build_datasets(data_args: DataArguments, args: DistillationArguments, *, teacher_depth: bool = False):
    """Training views (map-style or streamed) and, when there is evaluation data, whole-image evaluation samples
    (``hf_distill.training.data.build_eval_dataset``). ``teacher_depth``: the views also carry their exact depth
    (a teacher reads it; generated scenes only)."""
    sampler = ViewSampler(
        global_crop_size=data_args.global_crop_size,
        local_crop_size=data_args.local_crop_size,
        num_local_patches=data_args.num_local_patches,
        min_region=data_args.min_region,
        min_local_crop=data_args.min_local_crop,
        seed=args.seed,
        view_depth=teacher_depth,
    )
    source = build_training_source(data_args, args, with_depth=teacher_depth)
    if not hasattr(source, "__len__") and args.max_steps <= 0:
        raise ValueError("Streamed data has no length: set --num_iterations (--max_steps).")
    return build_view_dataset(source, sampler), build_eval_dataset(data_args, args)


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, args: DistillationArguments
) -> DistillationTrainer:
    """Load teachers and student, build the views and return a ready ``DistillationTrainer``."""
    set_seed(args.seed)
    teacher_depth = any(teacher_needs_depth(name) for name in model_args.teacher_models)
    # data errors surface before models load
    train_dataset, eval_dataset = build_datasets(data_args, args, teacher_depth=teacher_depth)
    checkpoints = model_args.teacher_checkpoints or [None] * len(model_args.teacher_models)
    with whole_models():  # partitioned, under ZeRO-3, by deepspeed.initialize
        teachers = [build_teacher(name, ckpt, base_model=model_args.teacher_base_model)
                    for name, ckpt in zip(model_args.teacher_models, checkpoints)]
        student = load_depth_model(model_args.student_arch, init=model_args.student_init)
    if model_args.student_init != "pretrained" and args.lambda_anchor == 0:
        logger.warning("--student_init %s starts a fresh head with --lambda_anchor 0: nothing holds its raw output's "
                       "level and spread, which may drift flat (lost in bf16) or below the final ReLU; the demo "
                       "recipe uses --lambda_anchor 0.1.", model_args.student_init)
    model = StudentWithProjectors(student, [t.token_width for t in teachers])

    if args.warmup_epochs > 0:
        if not hasattr(train_dataset, "__len__"):
            raise ValueError("--warmup_epochs needs data with a length; use --warmup_steps with streamed data.")
        batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        args.warmup_steps = round(args.warmup_epochs * math.ceil(len(train_dataset) / batch))

    return DistillationTrainer(
        model=model,
        teachers=teachers,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_views,
        processing_class=load_image_processor(model_args.student_arch),
        teacher_names=[display_name(name) for name in model_args.teacher_models],
        student_mean_std=image_mean_std(model_args.student_arch),
        teacher_probabilities=model_args.teacher_probabilities,
        teacher_dtype=resolve_teacher_dtype(model_args.teacher_dtype),
        card_info=CardInfo.from_arguments(model_args, data_args, args),
    )


def train_student(trainer: DistillationTrainer, resume_from_checkpoint: str | None = None) -> None:
    """Train, then write the student folder, its card and ``student_final.safetensors``; with ``--export_onnx``
    its verified ONNX export (``onnx/``); push when ``--push_to_hub`` is set."""
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if trainer.args.push_to_hub:
        if trainer.args.export_onnx:
            trainer.save_model(_internal_call=True)  # the export reads the saved folder; not pushed yet
            export_trained_student(trainer)
        trainer.push_to_hub()  # saves the student folder and card (with onnx/, its snippet), then uploads them
    else:
        trainer.save_model()
        trainer.create_model_card()
        if trainer.args.export_onnx:
            export_trained_student(trainer)


def export_trained_student(trainer: DistillationTrainer) -> None:
    """``hf_distill.export.export_student`` on the saved student (main process only); raises when the export does
    not reproduce the student."""
    if trainer.is_world_process_zero():
        from hf_distill.export import export_student  # the onnx extra: imported only when asked for

        result = export_student(trainer.args.output_dir)
        logger.info("ONNX export %s verified:\n%s", result.path, result.verification.format())
    trainer.accelerator.wait_for_everyone()


def run_distillation(
    model_args: ModelArguments, data_args: DataArguments, args: DistillationArguments
) -> DistillationTrainer:
    """Build the trainer and train, resuming from the newest complete ``checkpoint-*`` in ``output_dir`` if there is
    one (so a killed run continues when the same command is run again)."""
    trainer = build_trainer(model_args, data_args, args)
    resume = args.resume_from_checkpoint
    if resume is None:
        resume = last_complete_checkpoint(args.output_dir)
        if resume is not None:
            logger.warning("Resuming from %s", resume)
    train_student(trainer, resume)
    return trainer
