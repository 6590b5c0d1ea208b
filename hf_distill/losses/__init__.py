"""Distillation losses: median/MAD normalisation over HDN contexts and the cross-context terms (DESIGN.md §4)."""

from hf_distill.losses.distill import (
    DistillationLoss,
    FeatureProjector,
    crop_boxes,
    feature_alignment_loss,
    gradient_matching_loss,
    local_global_loss,
    shared_context_loss,
)
from hf_distill.losses.normalize import HDN_VARIANTS, NORMALIZATIONS, distillation_loss, normalize_global

__all__ = [
    "HDN_VARIANTS",
    "NORMALIZATIONS",
    "DistillationLoss",
    "FeatureProjector",
    "crop_boxes",
    "distillation_loss",
    "feature_alignment_loss",
    "gradient_matching_loss",
    "local_global_loss",
    "normalize_global",
    "shared_context_loss",
]
