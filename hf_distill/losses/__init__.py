"""Distillation losses: median/MAD normalisation over HDN contexts and the cross-context terms (docs/method.md, Losses).

normalize.py: strategies and the normalised L1; median_mad.py: the per-context statistics engine (value_keys.py:
valid pixels and value buckets; selection.py, selection_cpu.py, selection_static.py: exact order statistics);
contexts.py: the registry of HDN context families; distill.py: the terms and their weighted sum;
config.py: the loss options (weights, normalisation, contexts), declared once.
"""

from hf_distill.losses.distill import (
    DistillationLoss,
    FeatureProjector,
    crop_boxes,
    feature_alignment_loss,
    gradient_matching_loss,
    local_global_loss,
    output_anchor_loss,
    shared_context_loss,
)
from hf_distill.losses.config import DistillationLossConfig
from hf_distill.losses.contexts import CONTEXT_FAMILIES
from hf_distill.losses.median_mad import ContextFamily
from hf_distill.losses.normalize import HDN_VARIANTS, NORMALIZATIONS, normalize_global, normalized_l1

__all__ = [
    "CONTEXT_FAMILIES",
    "HDN_VARIANTS",
    "NORMALIZATIONS",
    "ContextFamily",
    "DistillationLoss",
    "DistillationLossConfig",
    "FeatureProjector",
    "crop_boxes",
    "feature_alignment_loss",
    "gradient_matching_loss",
    "local_global_loss",
    "normalize_global",
    "normalized_l1",
    "output_anchor_loss",
    "shared_context_loss",
]
