"""Output spaces: what a teacher family's network predicts and how that becomes the relative disparity the losses
expect (larger = closer)."""

from __future__ import annotations

import enum

import torch
from torch import Tensor

class OutputSpace(enum.Enum):
    """What a family's network predicts, and therefore how it enters the (scale/shift-normalised) losses."""

    DISPARITY = "relative disparity"
    MINMAX_DISPARITY = "min-max normalised disparity in [0, 1]"
    INVERSE_DEPTH = "inverse depth (up to the image's focal scale)"
    METRIC_DEPTH = "metric depth (no shift)"
    AFFINE_DEPTH = "affine-invariant depth (unknown shift)"


# How each output space becomes the disparity the losses expect; a space missing here is refused.
ENTERS_AS = {
    OutputSpace.DISPARITY: "itself",
    OutputSpace.MINMAX_DISPARITY: "itself",
    OutputSpace.INVERSE_DEPTH: "itself",
    OutputSpace.METRIC_DEPTH: "1 / depth on valid pixels (0 elsewhere)",
}

REFUSAL_REASON = (
    "it predicts affine-invariant depth, whose shift is unknown, so 1 / depth is not a disparity up to scale and "
    "no fixed conversion turns it into one. Use a disparity or metric-depth teacher (e.g. genpercept-disparity "
    "instead of genpercept-depth)."
)


def to_disparity(prediction: Tensor, space: OutputSpace) -> Tensor:
    """A teacher network's raw prediction (N, H, W) in ``space`` -> relative disparity (N, H, W), float32.

    Metric depth becomes ``1 / depth`` where the depth is finite and positive and 0 (infinitely far) elsewhere.
    """
    prediction = prediction.float()
    if space in (OutputSpace.DISPARITY, OutputSpace.MINMAX_DISPARITY, OutputSpace.INVERSE_DEPTH):
        return prediction
    if space is OutputSpace.METRIC_DEPTH:
        valid = torch.isfinite(prediction) & (prediction > 0)
        return torch.where(valid, 1.0 / torch.where(valid, prediction, 1.0), 0.0)
    raise ValueError(f"a teacher predicting {space.value} cannot be used: {REFUSAL_REASON}")
