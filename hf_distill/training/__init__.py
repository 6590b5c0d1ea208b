"""Training: the argument dataclasses, ``DistillationTrainer``, its callbacks, checkpoints, cards and the run
assembly that ``scripts/distill.py`` calls (through ``hf_distill.training.cli``)."""

from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments
from hf_distill.training.trainer import DistillationTrainer

__all__ = ["DataArguments", "DistillationArguments", "DistillationTrainer", "ModelArguments"]
