"""The teacher interface (``Teacher``), a family's row (``TeacherFamily``) and the resizing teachers share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig

from hf_distill.teachers.spaces import OutputSpace


def resize_bilinear(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) or (N, H, W) -> the same at ``size`` (bilinear, antialiased when shrinking); unchanged when the
    size already matches."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if images.dim() == 3:
        return resize_bilinear(images[:, None], size)[:, 0]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def nearest_multiple(side: float, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``side`` (at least ``multiple``)."""
    return max(multiple, round(side / multiple) * multiple)


class Teacher(nn.Module):
    """A frozen depth teacher (see the module docstring). Subclasses set ``token_width`` when they give tokens.

    Args:
        family: the family's row in ``TEACHER_FAMILIES``.
    """

    token_width: int | None = None
    needs_depth = False  # True: forward() takes ``depth``, the exact depth of the views (OracleTeacher)

    def __init__(self, family: TeacherFamily) -> None:
        super().__init__()
        self.family = family

    def forward(self, views: Tensor, want_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        """Args: views (N, 3, H, W) RGB in [0, 1]. Returns the relative disparity (N, H, W) float32 and, when
        ``want_tokens``, the final encoder tokens (N, T, token_width) in the network's dtype (else None)."""
        raise NotImplementedError

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily) -> Teacher:
        """Build the teacher named ``name`` (alias, Hub id or local folder), with weights from ``checkpoint`` where
        the family takes a separate weights file."""
        raise NotImplementedError

    def check_tokens(self, want_tokens: bool) -> None:
        """Raise ValueError when ``want_tokens`` asks a teacher without encoder tokens for them."""
        if want_tokens and self.token_width is None:
            raise ValueError(f"a {self.family.name} teacher has no encoder tokens for the feature term")



@dataclass(frozen=True)
class TeacherFamily:
    """One row of ``TEACHER_FAMILIES``.

    name: display name; predicts: the network's output space; teacher_class: the ``Teacher`` that runs it (None:
    refused); model_type: the transformers ``model_type`` of transformers families; tokens: gives final encoder
    tokens (Depth Anything); input_multiple: network input sides are rounded to this; input_side: a fixed square
    input side computed from the config (overrides input_multiple).
    """

    name: str
    predicts: OutputSpace
    teacher_class: type[Teacher] | None
    model_type: str | None = None
    tokens: bool = False
    input_multiple: int = 1
    input_side: Callable[[PretrainedConfig], int] | None = None
    needs_depth: bool = False

    def input_size(self, config: PretrainedConfig, height: int, width: int) -> tuple[int, int]:
        """The network input size for views of ``height`` x ``width``."""
        if self.input_side is not None:
            side = self.input_side(config)
            return side, side
        return nearest_multiple(height, self.input_multiple), nearest_multiple(width, self.input_multiple)
