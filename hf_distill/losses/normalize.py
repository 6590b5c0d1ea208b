"""Depth normalisation strategies and the normalised L1 distance ``L_Dis`` (docs/method.md, Losses).

Maps are ``(B, H, W)``, normalised per context as ``(d - median) / (mad + 1e-6)`` (``losses/median_mad.py``).
Strategies: ``none``, ``global`` (one context per image), ``local`` (the finest HDN level only), ``hybrid`` (HDN
levels ``0..hdn_levels-1``); the contexts of a level come from the ``hdn_variant`` family of
``losses/contexts.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_distill.losses.contexts import CONTEXT_FAMILIES, HDN_VARIANTS
from hf_distill.losses.median_mad import context_statistics, paired_l1_sums

NORMALIZATIONS = ("none", "global", "local", "hybrid")
MAX_HDN_LEVELS = 8

__all__ = [
    "HDN_VARIANTS",
    "MAX_HDN_LEVELS",
    "NORMALIZATIONS",
    "check_levels",
    "check_maps",
    "check_options",
    "fp32",
    "levels_of",
    "normalize_global",
    "normalized_l1",
    "normalized_l1_sums",
]


def check_options(normalization: str, hdn_variant: str, hdn_levels: int) -> None:
    """Raise ValueError naming the offending option (``--normalization``, ``hdn_variant``, ``hdn_levels``)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not one of {NORMALIZATIONS} (flag --normalization)")
    if hdn_variant not in CONTEXT_FAMILIES:
        raise ValueError(f"hdn_variant={hdn_variant!r} is not one of {tuple(CONTEXT_FAMILIES)}")
    check_levels(hdn_levels, "hdn_levels")


def check_levels(levels: int, name: str) -> None:
    """Raise ValueError naming ``name`` unless ``levels`` is an integer hierarchy depth in [1, MAX_HDN_LEVELS]."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_HDN_LEVELS:
        raise ValueError(f"{name} must be an integer in [1, {MAX_HDN_LEVELS}], got {levels!r}.")


def check_maps(student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor | None:
    """Validate ``(B, H, W)`` maps of one shape; return the mask as bool on the maps' device (or None)."""
    if student.dim() != 3 or student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be (B, H, W) maps of one shape"
        )
    if mask is None:
        return None
    if mask.shape != student.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the maps' shape {tuple(student.shape)}")
    return mask.to(device=student.device, dtype=torch.bool)


def fp32(device: torch.device) -> torch.autocast:
    """Context manager turning autocast off, so that statistics are computed in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def levels_of(normalization: str, hdn_levels: int) -> list[int]:
    """HDN levels a strategy normalises over: global -> [0], local -> the finest only, hybrid -> all."""
    if normalization == "global":
        return [0]
    if normalization == "local":
        return [hdn_levels - 1]
    return list(range(hdn_levels))


def normalized_l1_sums(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor | None = None,
    *,
    normalization: str = "hybrid",
    hdn_variant: str = "dr",
    hdn_levels: int = 3,
) -> tuple[Tensor, Tensor]:
    """Per-image sums over the valid pixels of the per-pixel normalised L1 error, and the valid-pixel counts.

    student, teacher: (B, H, W); mask: (B, H, W) bool or None. Returns (B,) float64 sums carrying the
    student's autograd graph and (B,) long counts. The teacher is a constant target (detached).
    """
    check_options(normalization, hdn_variant, hdn_levels)
    mask = check_maps(student, teacher, mask)
    with fp32(student.device):
        student, teacher = student.float(), teacher.detach().float()
        batch = student.shape[0]
        if normalization == "none":
            error = (student - teacher).abs().reshape(batch, -1).double()
            if mask is None:
                return error.sum(1), torch.full((batch,), error.shape[1], device=error.device)
            flat_mask = mask.reshape(batch, -1)
            return torch.where(flat_mask, error, 0.0).sum(1), flat_mask.sum(1)
        levels = levels_of(normalization, hdn_levels)
        stats = context_statistics(student, teacher, mask, levels, CONTEXT_FAMILIES[hdn_variant])
        return paired_l1_sums(stats) / stats.levels, stats.valid.count


def normalized_l1(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor | None = None,
    *,
    normalization: str = "hybrid",
    hdn_variant: str = "dr",
    hdn_levels: int = 3,
) -> Tensor:
    """``L_Dis``: mean over the batch's valid pixels of the per-pixel normalised L1 error (float32 scalar).

    student, teacher: (B, H, W) maps; mask: (B, H, W) bool, None = all valid. ``normalization``:
    ``none`` (mean |s - t|), ``global`` (one context per image), ``local`` (the finest HDN level only),
    ``hybrid`` (HDN levels ``0..hdn_levels-1``); ``hdn_variant``: a key of ``CONTEXT_FAMILIES`` (``dr``
    equal-width value bins of the teacher, ``dp`` quantile bins, ``ds`` 2^k x 2^k spatial grid). A pixel's
    error is the mean over the contexts holding it of |N_u(s) - N_u(t)|. A batch without valid pixels gives 0
    (with a graph).
    """
    sums, counts = normalized_l1_sums(
        student, teacher, mask, normalization=normalization, hdn_variant=hdn_variant, hdn_levels=hdn_levels
    )
    return (sums.sum() / counts.sum().clamp(min=1)).float()


def normalize_global(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Both maps normalised per image over its valid pixels: two (B, H, W) float32 maps, 0 at invalid pixels.

    The teacher's map carries no gradient.
    """
    mask = check_maps(student, teacher, mask)
    with fp32(student.device):
        student, teacher = student.float(), teacher.detach().float()
        stats = context_statistics(student, teacher, mask, [0], None)
        norm_student, norm_teacher = stats.normalized(0, half=0), stats.normalized(0, half=1)
        scatter = stats.valid.scatter
        return scatter(norm_student.reshape(-1), student.shape), scatter(norm_teacher.reshape(-1), student.shape)
