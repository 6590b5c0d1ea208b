"""Cross-context distillation terms and their weighted sum (docs/method.md, Losses).

All terms are pure functions of tensors; teacher inputs are treated as constant targets (detached) and
every statistic is computed in float32, autocast or not.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_distill.losses.config import DistillationLossConfig
from hf_distill.losses.normalize import fp32, normalize_global, normalized_l1, normalized_l1_sums


def shared_context_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, **norm_kwargs) -> Tensor:
    """``L_sc``: ``L_Dis`` between student and teacher predictions of the same global view.

    student, teacher: (B, H, W); mask: (B, H, W) bool or None; ``norm_kwargs``: ``normalization``,
    ``hdn_variant``, ``hdn_levels`` of :func:`normalized_l1`.
    """
    return normalized_l1(student, teacher, mask, **norm_kwargs)


def crop_boxes(maps: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample (B, H, W) maps inside (B, P, 4) boxes to (B, P, h, w) with bilinear interpolation.

    Boxes are ``(x0, y0, x1, y1)`` in continuous map pixel coordinates (pixel i spans [i, i + 1)), with
    sub-pixel precision: output pixel (i, j) of a box samples the point
    ``(x0 + (j + 0.5) * (x1 - x0) / w, y0 + (i + 0.5) * (y1 - y0) / h)``, like ``grid_sample`` with
    ``align_corners=False``. Points within half a pixel of the map border take the border value.
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    if boxes.dim() != 3 or boxes.shape[0] != maps.shape[0] or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (B, P, 4) with B={maps.shape[0]}, got {tuple(boxes.shape)}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    batch, patches = boxes.shape[:2]
    with fp32(maps.device):
        maps, boxes = maps.float(), boxes.to(device=maps.device, dtype=torch.float32)
        x0, y0, x1, y1 = boxes.unbind(-1)
        fx = (torch.arange(width, device=maps.device) + 0.5) / width
        fy = (torch.arange(height, device=maps.device) + 0.5) / height
        # Normalised grid coordinate of continuous position X on a map of width W is 2 X / W - 1.
        gx = (x0[..., None] + fx * (x1 - x0)[..., None]) * (2.0 / maps.shape[2]) - 1.0  # (B, P, w)
        gy = (y0[..., None] + fy * (y1 - y0)[..., None]) * (2.0 / maps.shape[1]) - 1.0  # (B, P, h)
        grid = torch.stack(
            [gx[:, :, None, :].expand(-1, -1, height, -1), gy[:, :, :, None].expand(-1, -1, -1, width)], -1
        )
        crops = F.grid_sample(
            maps[:, None],
            grid.reshape(batch, patches * height, width, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
    return crops.reshape(batch, patches, height, width)


def local_global_loss(
    student_global: Tensor, teacher_patches: Tensor, boxes: Tensor, mask: Tensor | None = None, **norm_kwargs
) -> Tensor:
    """``L_lg``: mean over patches of ``L_Dis(crop(student global prediction, box), teacher patch)``.

    student_global: (B, H, W); teacher_patches: (B, P, h, w); boxes: (B, P, 4) in student_global pixel
    coordinates (see :func:`crop_boxes`); mask: (B, P, h, w) bool or None. The crop is resampled to the
    patch's resolution and each (crop, patch) pair is normalised on its own.
    """
    if teacher_patches.dim() != 4:
        raise ValueError(f"teacher_patches must be (B, P, h, w), got {tuple(teacher_patches.shape)}")
    batch, patches, height, width = teacher_patches.shape
    if boxes.shape[:2] != (batch, patches):
        raise ValueError(f"boxes {tuple(boxes.shape)} must be (B, P, 4) = ({batch}, {patches}, 4)")
    if mask is not None and mask.shape != teacher_patches.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the patches' shape {tuple(teacher_patches.shape)}")
    crops = crop_boxes(student_global, boxes, (height, width))
    flat = (batch * patches, height, width)
    sums, counts = normalized_l1_sums(
        crops.reshape(flat),
        teacher_patches.reshape(flat),
        None if mask is None else mask.reshape(flat),
        **norm_kwargs,
    )
    per_patch = sums.reshape(batch, patches).sum(0) / counts.reshape(batch, patches).sum(0).clamp(min=1)
    return per_patch.mean().float()


class FeatureProjector(nn.Module):
    """Trainable map from student token width to teacher token width (identity when they are equal).

    Lives next to the student in the trainable module (one per teacher), never in the exported student.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise ValueError(f"token widths must be positive, got student {student_dim}, teacher {teacher_dim}")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.proj = nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., student_dim) -> (..., teacher_dim)."""
        return self.proj(tokens)


def feature_alignment_loss(
    student_tokens: Tensor, teacher_tokens: Tensor, projector: nn.Module | None = None, margin: float = 0.85
) -> Tensor:
    """``L_feat``: mean of ``1 - cos`` over the tokens whose cosine similarity is below ``margin``.

    student_tokens: (B, N, Cs); teacher_tokens: (B, N, Ct); the projector maps Cs -> Ct (None when
    Cs == Ct). Tokens already aligned beyond the margin are dropped; when none is left the loss is 0
    (still connected to the student's graph, so every parameter takes part in the backward pass).
    """
    if student_tokens.dim() != 3 or teacher_tokens.dim() != 3 or student_tokens.shape[:2] != teacher_tokens.shape[:2]:
        raise ValueError(
            f"student tokens {tuple(student_tokens.shape)} and teacher tokens {tuple(teacher_tokens.shape)} "
            "must be (B, N, C) with the same B and N"
        )
    with fp32(student_tokens.device):
        tokens = student_tokens.float()
        if projector is not None:
            weight = next(projector.parameters(), None)
            tokens = projector(tokens if weight is None else tokens.to(weight.dtype)).float()
        target = teacher_tokens.detach().float()
        if tokens.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"student tokens have width {tokens.shape[-1]} but teacher tokens {target.shape[-1]}: pass "
                f"projector=FeatureProjector({student_tokens.shape[-1]}, {target.shape[-1]})"
            )
        cosine = F.cosine_similarity(tokens, target, dim=-1)
        below = cosine < margin
        return ((1.0 - cosine) * below).sum() / below.sum().clamp(min=1)


def gradient_matching_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, scales: int = 4) -> Tensor:
    """``L_grad`` (MiDaS multi-scale gradient matching) on the globally normalised residual.

    ``R = N(student) - N(teacher)`` with the per-image median/MAD normalisation over valid pixels. At
    scale k (k < ``scales``) the map and mask are subsampled with stride 2^k; the term is MiDaS's
    batch-based reduction: the sum of |R(x+1) - R(x)| and |R(y+1) - R(y)| over neighbour pairs whose two
    pixels are valid, divided by the number of valid pixels at that scale. Terms are summed over scales.
    """
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    norm_student, norm_teacher = normalize_global(student, teacher, mask)
    with fp32(student.device):
        residual = norm_student - norm_teacher
        total = residual.new_zeros(())
        for scale in range(scales):
            step = 1 << scale
            r = residual[:, ::step, ::step]
            grad_x = (r[:, :, 1:] - r[:, :, :-1]).abs()
            grad_y = (r[:, 1:, :] - r[:, :-1, :]).abs()
            if mask is None:
                count = r.numel()
            else:
                m = mask[:, ::step, ::step].to(device=r.device, dtype=torch.bool)
                grad_x = grad_x * (m[:, :, 1:] & m[:, :, :-1])
                grad_y = grad_y * (m[:, 1:, :] & m[:, :-1, :])
                count = m.sum().clamp(min=1)
            total = total + (grad_x.sum() + grad_y.sum()) / count
        return total


# Targets of the output anchor: the raw maps' mean and standard deviation (about a median/MAD of 1 and 0.2, what a
# fresh head starts with: hf_distill.models.FRESH_HEAD_LEVEL and FRESH_HEAD_SPREAD, for bell-shaped maps).
ANCHOR_LEVEL = 1.0
ANCHOR_SPREAD = 0.25


def output_anchor_loss(student: Tensor, mask: Tensor | None = None) -> Tensor:
    """``L_anchor``: mean over maps of ``log(mean / ANCHOR_LEVEL)^2 + log(std / (ANCHOR_SPREAD * ANCHOR_LEVEL))^2``.

    student: (B, H, W) raw predictions; mask: (B, H, W) bool or None (mean and population std over the valid
    pixels of each map). Any function of a map's mean and std has a gradient (in the map's pixels) in the span of
    the constant map and the map itself, the directions of a shift and a scaling; scale- and shift-invariant terms
    have gradients orthogonal to both. So the anchor fixes the output's level and spread without pulling against the
    median/MAD-normalised terms (whose value it leaves unchanged: they are computed on the same maps).
    """
    if student.dim() != 3:
        raise ValueError(f"student must be (B, H, W), got {tuple(student.shape)}")
    with fp32(student.device):
        maps = student.float().flatten(1)
        weights = torch.ones_like(maps) if mask is None else mask.to(maps.device).flatten(1).float()
        counts = weights.sum(1).clamp(min=1)
        mean = (maps * weights).sum(1) / counts
        variance = (((maps - mean[:, None]) ** 2) * weights).sum(1) / counts
        # The floors keep a dead (all-zero) or constant map finite; such a map has no gradient to give anyway.
        level = torch.log(mean.clamp(min=1e-12) / ANCHOR_LEVEL)
        spread = 0.5 * torch.log((variance + 1e-24) / (ANCHOR_SPREAD * ANCHOR_LEVEL) ** 2)
        return (level**2 + spread**2).mean()


class DistillationLoss(nn.Module):
    """Weighted sum of the distillation terms (docs/method.md, Losses).

    ``lambda_sc * L_sc + lambda_lg * L_lg + lambda_feat * L_feat + lambda_grad * L_grad + lambda_hdn * L_hdn
    + lambda_anchor * L_anchor`` where ``L_sc`` and ``L_lg`` use ``normalization`` / ``hdn_variant`` /
    ``hdn_levels`` and ``L_hdn`` is the shared-context term with hybrid (HDN) normalisation over
    ``hdn_loss_variant`` / ``hdn_loss_levels``;
    ``L_anchor`` (``output_anchor_loss``) holds the student's raw output level and spread.
    Defaults are the paper's (sc 1.0, lg 0.5, feat 1.0, grad 2.0, hdn 0, anchor 0).
    """

    def __init__(self, **options: Any) -> None:
        """``options``: fields of ``DistillationLossConfig`` (the others keep the paper's defaults); validated there,
        with errors naming the flag."""
        super().__init__()
        config = DistillationLossConfig(**options)
        self.weights = {"sc": config.lambda_sc, "lg": config.lambda_lg, "feat": config.lambda_feat,
                        "grad": config.lambda_grad, "hdn": config.lambda_hdn, "anchor": config.lambda_anchor}
        self.norm_kwargs = {"normalization": config.normalization, "hdn_variant": config.hdn_variant,
                            "hdn_levels": config.hdn_levels}
        self.hdn_kwargs = {"normalization": "hybrid", "hdn_variant": config.hdn_loss_variant,
                           "hdn_levels": config.hdn_loss_levels}
        self.feature_margin = config.feature_margin

    @classmethod
    def from_config(cls, config: DistillationLossConfig) -> DistillationLoss:
        """The loss a config (or the training arguments, which extend it) describes."""
        return cls(**config.loss_options())

    def forward(
        self,
        student_global: Tensor,
        teacher_global: Tensor,
        teacher_patches: Tensor | None = None,
        global_boxes: Tensor | None = None,
        student_tokens: Tensor | None = None,
        teacher_tokens: Tensor | None = None,
        projector: nn.Module | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, terms)``: the weighted sum and each computed term, detached, keyed
        ``sc``, ``lg``, ``feat``, ``grad``, ``hdn``, ``anchor``. A term whose weight is 0 or whose inputs are None
        is not computed. Shapes: global maps and mask (B, H, W); patches (B, P, h, w); boxes (B, P, 4)
        in global-map pixels; tokens (B, N, C).
        """
        if (teacher_patches is None) != (global_boxes is None):
            raise ValueError("teacher_patches and global_boxes must be given together")
        if (student_tokens is None) != (teacher_tokens is None):
            raise ValueError("student_tokens and teacher_tokens must be given together")
        w = self.weights
        terms: dict[str, Tensor] = {}
        if w["sc"]:
            terms["sc"] = shared_context_loss(student_global, teacher_global, mask, **self.norm_kwargs)
        if w["lg"] and teacher_patches is not None:
            terms["lg"] = local_global_loss(student_global, teacher_patches, global_boxes, **self.norm_kwargs)
        if w["feat"] and student_tokens is not None:
            terms["feat"] = feature_alignment_loss(student_tokens, teacher_tokens, projector, self.feature_margin)
        if w["grad"]:
            terms["grad"] = gradient_matching_loss(student_global, teacher_global, mask)
        if w["hdn"]:
            same_as_sc = "sc" in terms and self.hdn_kwargs == self.norm_kwargs
            terms["hdn"] = terms["sc"] if same_as_sc else normalized_l1(
                student_global, teacher_global, mask, **self.hdn_kwargs
            )
        if w["anchor"]:
            terms["anchor"] = output_anchor_loss(student_global, mask)
        if terms:
            total = sum(w[name] * value for name, value in terms.items())
        else:
            total = student_global.float().sum() * 0.0
        return total, {name: value.detach() for name, value in terms.items()}
