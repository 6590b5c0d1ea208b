"""The options of the distillation objective (docs/method.md, Losses), declared once.

``DistillationLossConfig`` holds the weights, the normalisation and HDN contexts of the terms and the feature margin,
with their help text, choices and validation. The training arguments inherit it (every field is a flag of
``scripts/distill.py``), ``DistillationLoss.from_config`` builds the loss from it and the model card lists it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from hf_distill.losses.contexts import CONTEXT_FAMILIES, HDN_VARIANTS
from hf_distill.losses.normalize import NORMALIZATIONS, check_levels
from hf_distill.options import check_choice

_FAMILIES_HELP = "; ".join(f"{name}: {family.help}" for name, family in CONTEXT_FAMILIES.items())


@dataclass
class DistillationLossConfig:
    """Weights, normalisation and contexts of the distillation terms. Defaults are the paper's."""

    normalization: str = field(
        default="hybrid",
        metadata={"help": "Normalisation of L_sc and L_lg: none, global, local (finest level) or hybrid (all "
                  "levels, HDN).", "choices": NORMALIZATIONS},
    )
    hdn_variant: str = field(
        default="dr", metadata={"help": f"HDN context family of local/hybrid ({_FAMILIES_HELP}).",
                                "choices": HDN_VARIANTS},
    )
    hdn_levels: int = field(
        default=3, metadata={"help": "Hierarchy levels (level k has 2^k contexts per axis/range); --num_segments N "
                             "sets log2(N)+1."}
    )
    lambda_sc: float = field(default=1.0, metadata={"help": "Weight of the shared-context loss."})
    lambda_lg: float = field(default=0.5, metadata={"help": "Weight of the local-global loss."})
    lambda_feat: float = field(default=1.0, metadata={"help": "Weight of the feature-alignment loss."})
    lambda_grad: float = field(default=2.0, metadata={"help": "Weight of the gradient-matching loss."})
    lambda_hdn: float = field(
        default=0.0, metadata={"help": "Weight of the extra HDN-normalised shared-context term (NYU recipe: 0.8)."}
    )
    lambda_anchor: float = field(
        default=0.0,
        metadata={"help": "Weight of the output anchor: (log mean)^2 + (log(std / 0.25))^2 of the student's raw maps "
                  "(hf_distill.losses.output_anchor_loss). The other terms are blind to the raw output's level and "
                  "spread; the anchor holds them near 1 and 0.25 so that every pixel stays above the head's final "
                  "ReLU and the depth signal stays representable in bf16. Its gradient moves only level and spread, "
                  "which the other terms cannot see. Use it for students started with --student_init random or "
                  "backbone (demo recipe: 0.1); 0 (the paper's objective) suits pretrained students."},
    )
    hdn_loss_variant: str = field(
        default="dr", metadata={"help": "HDN context family of the lambda_hdn term.", "choices": HDN_VARIANTS}
    )
    hdn_loss_levels: int = field(default=3, metadata={"help": "Hierarchy levels of the lambda_hdn term."})
    feature_margin: float = field(
        default=0.85, metadata={"help": "Tokens whose student/teacher cosine is above this margin are not penalised."}
    )

    def __post_init__(self) -> None:
        check_choice("--normalization", self.normalization, NORMALIZATIONS)
        check_choice("--hdn_variant", self.hdn_variant, HDN_VARIANTS)
        check_choice("--hdn_loss_variant", self.hdn_loss_variant, HDN_VARIANTS)
        check_levels(self.hdn_levels, "--hdn_levels")
        check_levels(self.hdn_loss_levels, "--hdn_loss_levels")
        for name in ("lambda_sc", "lambda_lg", "lambda_feat", "lambda_grad", "lambda_hdn", "lambda_anchor"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"--{name} must be a finite non-negative weight, got {value}.")
        if not 0.0 <= self.feature_margin <= 1.0:
            raise ValueError(f"--feature_margin must lie in [0, 1], got {self.feature_margin}.")

    def loss_options(self) -> dict[str, Any]:
        """The loss fields alone (also of a subclass such as the training arguments), in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(DistillationLossConfig)}
