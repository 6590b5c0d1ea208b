"""Output-spread checks: whether a model's raw depth maps are too flat to survive the dtype it runs in."""

from __future__ import annotations

import torch
from torch import Tensor

# A depth map's mean absolute deviation (MAD) must span at least this many units of the running dtype's relative
# precision at its median level: below it, rounding noise is a sizeable part of the signal (about 7% of the MAD at
# the limit) and below one unit every map is one constant. bfloat16 (eps 2^-7): MAD/median >= 0.031.
MIN_SPREAD_EPS = 4


def output_spread(depth: Tensor) -> Tensor:
    """The median over maps of MAD / |median| of raw depth maps ``depth`` (N, H, W) or (H, W): a 0-dim float64 tensor
    on their device (nothing is read back to the host). A constant map counts as 0."""
    if depth.dim() == 2:
        depth = depth[None]
    if depth.dim() != 3 or depth.numel() == 0:
        raise ValueError(f"depth must be (N, H, W) or (H, W) with pixels, got {tuple(depth.shape)}")
    maps = depth.detach().double().flatten(1)
    median = maps.median(dim=1).values
    deviation = (maps - median[:, None]).abs().mean(dim=1)
    return torch.where(deviation > 0, deviation / median.abs(), torch.zeros_like(deviation)).median()


def spread_problem(spread: float, dtype: torch.dtype) -> str | None:
    """Why maps of relative spread ``spread`` (``output_spread``) are too flat for ``dtype``, or None when they are
    not: the spread must reach ``MIN_SPREAD_EPS`` units of ``torch.finfo(dtype).eps``."""
    eps = torch.finfo(dtype).eps
    if spread >= MIN_SPREAD_EPS * eps:
        return None
    dtype_name = str(dtype).removeprefix("torch.")
    return (
        f"raw output too flat for {dtype_name}: its mean absolute deviation is {spread:.2g} of its median level, "
        f"{spread / eps:.2g} units of {dtype_name}'s precision {eps:.2g} (needs {MIN_SPREAD_EPS}); in {dtype_name} "
        f"its maps are nearly one constant. Re-condition its head (hf_distill.models.reaffine_head) or run it in "
        f"float32."
    )


def flatness_problem(depth: Tensor, dtype: torch.dtype) -> str | None:
    """Why raw depth maps are too flat to be represented in ``dtype``, or None when they are not.

    Args:
        depth: (N, H, W) or (H, W) raw model outputs (a teacher's disparity or a student's prediction), any float
            dtype; a first batch is enough.
        dtype: the floating dtype the model will run in (``torch.bfloat16`` under ``--bf16`` autocast or
            ``--teacher_dtype bfloat16``, ``torch.float16``, ``torch.float32``).
    Returns:
        A one-line explanation when ``output_spread(depth)`` is below ``MIN_SPREAD_EPS`` units of
        ``torch.finfo(dtype).eps``, else None. Reads one number back to the host: call it once (first batch or
        load), not every step.
    """
    return spread_problem(float(output_spread(depth)), dtype)


def running_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a module computes in outside autocast: its parameters', float32 for one without (an oracle)."""
    parameter = next(module.parameters(), None)
    return torch.float32 if parameter is None else parameter.dtype
