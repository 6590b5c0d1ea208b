"""Scale/shift alignment and the standard monocular depth metrics (docs/method.md, Evaluation protocol).

Protocol per image: the raw prediction (already resized to the ground truth) is aligned to the ground
truth by least squares, clipped to the dataset's ``[min_depth, max_depth]`` and to ``>= 1e-6``, and
compared with the ground truth over the valid pixels.

- ``alignment="disparity"``: ``s * pred + t ~ 1 / gt`` over valid pixels with ``gt > 0`` and
  ``pred > 0``; the aligned disparity is clipped to ``>= 1e-3`` and inverted to depth. This is the
  right space for relative Depth Anything models, whose outputs are disparity-like (larger = closer).
- ``alignment="depth"``: ``s * pred + t ~ gt`` over valid pixels.
- ``alignment="none"``: the prediction is taken as metric depth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import evaluate

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
ALIGNMENTS: tuple[str, ...] = ("disparity", "depth", "none")

_MIN_DISPARITY = 1e-3
_MIN_PREDICTION = 1e-6


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)).to(device)


def _solve_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the normal equations are solved in float64.
    return torch.float32 if device.type == "mps" else torch.float64


def fit_scale_shift(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least squares ``s * x + t ~ y`` over ``mask``.

    Args:
        x, y: (B, H, W) float tensors.
        mask: (B, H, W) bool, the pixels that enter the fit.

    Returns:
        ``(s, t)``, each (B,) in the solve dtype (float64 except on MPS). The 2x2 normal equations are
        solved in closed form on centred sums. An image whose masked ``x`` is constant (or that has a
        single masked pixel) gets ``s = 0``, ``t = mean(y)`` (the minimum-norm solution); one with no
        masked pixel gets ``s = t = 0``.
    """
    dtype = _solve_dtype(x.device)
    w = mask.to(dtype)
    x = torch.where(mask, x.to(dtype), 0)
    y = torch.where(mask, y.to(dtype), 0)
    n = w.sum(dim=(-2, -1)).clamp(min=1)
    mean_x = x.sum(dim=(-2, -1)) / n
    mean_y = y.sum(dim=(-2, -1)) / n
    dx = (x - mean_x[:, None, None]) * w
    dy = (y - mean_y[:, None, None]) * w
    var_x = (dx * dx).sum(dim=(-2, -1))
    cov_xy = (dx * dy).sum(dim=(-2, -1))
    # Relative test: a constant x leaves only rounding noise in var_x.
    degenerate = var_x <= torch.finfo(dtype).eps * (x * x).sum(dim=(-2, -1))
    s = torch.where(degenerate, torch.zeros_like(var_x), cov_xy / torch.where(degenerate, 1, var_x))
    t = mean_y - s * mean_x
    return s, t


def align_prediction(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, *, alignment: str = "disparity"
) -> torch.Tensor:
    """Aligned, *unclipped* depth from a raw prediction.

    Args:
        pred, gt: (B, H, W) float; valid: (B, H, W) bool.

    Returns:
        (B, H, W) depth in the solve dtype.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    dtype = _solve_dtype(pred.device)
    if alignment == "none":
        return pred.to(dtype)
    if alignment == "depth":
        s, t = fit_scale_shift(pred, gt, valid)
        return s[:, None, None] * pred.to(dtype) + t[:, None, None]
    fit_mask = valid & (gt > 0) & (pred > 0)
    gt_disparity = torch.where(fit_mask, 1.0 / torch.where(fit_mask, gt.to(dtype), 1.0), 0.0)
    s, t = fit_scale_shift(pred, gt_disparity, fit_mask)
    disparity = (s[:, None, None] * pred.to(dtype) + t[:, None, None]).clamp(min=_MIN_DISPARITY)
    return 1.0 / disparity


def batch_depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor,
    *,
    alignment: str = "disparity",
    min_depth: float,
    max_depth: float,
) -> dict[str, torch.Tensor]:
    """Per-image metrics for a batch, computed on the tensors' device.

    Args:
        pred: (B, H, W) raw prediction at the ground truth's size.
        gt: (B, H, W) ground-truth depth in metres.
        valid: (B, H, W) bool evaluation mask; pixels whose ground truth is not finite and > 0 are
            dropped as well.
        alignment: "disparity", "depth" or "none".
        min_depth, max_depth: the dataset's depth range; the aligned prediction is clipped to it.

    Returns:
        ``{name: (B,) tensor}`` for every name in ``METRIC_NAMES`` (NaN for an image without a
        valid pixel). Only these per-image vectors need to cross ranks, never the maps.
    """
    pred, gt, valid = _as_tensor(pred), _as_tensor(gt), _as_tensor(valid)
    if pred.dim() != 3 or pred.shape != gt.shape or gt.shape != valid.shape:
        raise ValueError(
            f"pred, gt and valid must share one (B, H, W) shape, got {tuple(pred.shape)}, "
            f"{tuple(gt.shape)}, {tuple(valid.shape)}"
        )
    dtype = _solve_dtype(pred.device)
    gt = gt.to(dtype)
    valid = valid.bool() & torch.isfinite(gt) & (gt > 0)
    gt = torch.where(valid, gt, 1.0)

    depth = align_prediction(pred, gt, valid, alignment=alignment)
    depth = depth.clamp(min_depth, max_depth).clamp(min=_MIN_PREDICTION)

    w = valid.to(dtype)
    n = w.sum(dim=(-2, -1))

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * w).sum(dim=(-2, -1)) / n

    diff = depth - gt
    log_diff = torch.log(depth) - torch.log(gt)
    ratio = torch.maximum(depth / gt, gt / depth)
    return {
        "abs_rel": mean(diff.abs() / gt),
        "sq_rel": mean(diff**2 / gt),
        "rmse": mean(diff**2).sqrt(),
        "rmse_log": mean(log_diff**2).sqrt(),
        "log10": mean((torch.log10(depth) - torch.log10(gt)).abs()),
        "delta1": mean((ratio < 1.25).to(dtype)),
        "delta2": mean((ratio < 1.25**2).to(dtype)),
        "delta3": mean((ratio < 1.25**3).to(dtype)),
    }


def evaluate_depth(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor,
    *,
    alignment: str = "disparity",
    min_depth: float,
    max_depth: float,
) -> dict[str, float]:
    """Metrics of one image: ``pred``, ``gt`` (metres) and ``valid`` (bool) shaped (H, W).

    Returns ``{name: float}`` for every name in ``METRIC_NAMES``.
    """
    pred_t = _as_tensor(pred)
    gt_t, valid_t = _as_tensor(gt, pred_t.device), _as_tensor(valid, pred_t.device).bool()
    if pred_t.dim() != 2 or pred_t.shape != gt_t.shape or gt_t.shape != valid_t.shape:
        raise ValueError(
            f"pred, gt and valid must share one (H, W) shape, got {tuple(pred_t.shape)}, "
            f"{tuple(gt_t.shape)}, {tuple(valid_t.shape)}"
        )
    # Alignment and metrics only involve valid pixels: work on those alone, as a (1, 1, N) batch.
    selected = [t[valid_t][None, None] for t in (pred_t, gt_t, valid_t)]
    values = batch_depth_metrics(*selected, alignment=alignment, min_depth=min_depth, max_depth=max_depth)
    return {name: float(value[0]) for name, value in values.items()}


def summarize_rows(rows: Sequence[dict]) -> dict[str, float]:
    """Mean of each metric over per-sample rows, plus ``num_samples``.

    Rows whose metrics are NaN (no valid ground-truth pixel, or an unreadable sample whose row carries ``error``)
    are left out of the mean and the count, with a warning naming them, and counted in ``num_skipped`` (present
    only when some were skipped).
    """
    usable = [row for row in rows if not math.isnan(row["abs_rel"])]
    unreadable = [row["name"] for row in rows if row.get("error")]
    empty = [row["name"] for row in rows if math.isnan(row["abs_rel"]) and not row.get("error")]
    if empty:
        logger.warning("%d samples have no valid ground-truth pixel and are not averaged: %s", len(empty), empty)
    if unreadable:
        logger.warning("%d samples could not be read and are not averaged: %s", len(unreadable), unreadable)
    summary = {name: float(np.mean([row[name] for row in usable])) if usable else math.nan for name in METRIC_NAMES}
    summary["num_samples"] = len(usable)
    if len(usable) < len(rows):
        summary["num_skipped"] = len(rows) - len(usable)
    return summary


def mean_depth_metrics(
    predictions: Sequence[np.ndarray | torch.Tensor],
    references: Sequence[np.ndarray | torch.Tensor],
    *,
    alignment: str = "disparity",
    min_depth: float,
    max_depth: float,
) -> dict[str, float]:
    """Mean over images of :func:`evaluate_depth`, as ``summarize_rows`` reports it.

    Args:
        predictions: raw predictions, each (H, W) at its reference's size.
        references: ground-truth depth in metres, each (H, W); a pixel that is 0 or not finite is invalid
            (so a benchmark's mask travels as zeros in the reference).

    Returns:
        ``{name: mean}`` for every name in ``METRIC_NAMES`` plus ``num_samples``, the number of images with
        at least one valid pixel (the others are left out).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    rows = []
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        reference = _as_tensor(reference)
        valid = torch.isfinite(reference) & (reference > 0)
        metrics = evaluate_depth(_as_tensor(prediction, reference.device), reference, valid, alignment=alignment,
                                 min_depth=min_depth, max_depth=max_depth)
        rows.append({"name": f"image {index}", **metrics})
    return summarize_rows(rows)


DEPTH_METRIC_MODULE = Path(__file__).resolve().parent / "depth_metric"


def load_depth_metric(
    alignment: str = "disparity", min_depth: float = 1e-3, max_depth: float = 10.0, **load_kwargs
) -> evaluate.EvaluationModule:
    """The depth metrics as an ``evaluate`` module: ``evaluate.load`` on the module folder shipped in the package
    (works offline). ``compute(predictions=[...], references=[...])`` over (H, W) maps returns
    :func:`mean_depth_metrics`. ``load_kwargs`` go to ``evaluate.load`` (e.g. ``keep_in_memory=True``)."""
    import evaluate

    return evaluate.load(str(DEPTH_METRIC_MODULE), alignment=alignment, min_depth=min_depth, max_depth=max_depth,
                         **load_kwargs)
