"""The trainable module: the student network plus one feature projector per teacher.

The projectors live here (not in the loss, not in the trainer) so that DDP wraps them, the optimiser updates
them and ``checkpoint-*/`` carries them; exported student files never contain them.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DepthAnythingForDepthEstimation

from hf_distill.losses import FeatureProjector
from hf_distill.token_tap import EncoderTokenTap

# Parameters that a plain forward never touches: the DINOv2 mask token (used only with bool_masked_pos) and
# the residual branch of the first fusion layer (it has no coarser level to fuse). Frozen so that DDP need not
# search for unused parameters every step.
STRUCTURALLY_UNUSED = ("backbone.embeddings.mask_token", "neck.fusion_stage.layers.0.residual_layer1.")


class StudentWithProjectors(nn.Module):
    """Student depth model with feature projectors (student width -> each teacher's width).

    Args:
        student: the student network.
        teacher_widths: encoder token width of each teacher, in teacher order; None for a teacher without tokens
            (it gets no projector).
    """

    def __init__(self, student: DepthAnythingForDepthEstimation, teacher_widths: list[int | None]) -> None:
        super().__init__()
        self.student = student
        width = student.config.backbone_config.hidden_size
        self.projectors = nn.ModuleList(nn.Identity() if w is None else FeatureProjector(width, w)
                                        for w in teacher_widths)
        for name, param in student.named_parameters():
            if name.startswith(STRUCTURALLY_UNUSED):
                param.requires_grad_(False)
        # Attached for the module's lifetime (not per forward): torch.compile never calls a hook added later.
        self._token_tap = EncoderTokenTap(student)

    def forward(
        self, pixel_values: torch.Tensor, teacher_index: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict depth and, when ``teacher_index`` is given, the projected final encoder tokens.

        Args:
            pixel_values: (B, 3, H, W) normalised with the student's mean/std; H, W multiples of 14.
            teacher_index: which teacher's projector maps the tokens.
        Returns:
            depth (B, H, W) and tokens (B, N, C_teacher) with N = H*W/14^2, or None.
        """
        depth = self.student(pixel_values=pixel_values).predicted_depth
        tokens = self._token_tap.pop()
        if teacher_index is None:
            return depth, None
        return depth, self.projectors[teacher_index](tokens)

    def activation_checkpointing_enable(self, **kwargs) -> None:
        """Delegate to the student (the Trainer calls this when ``--activation_checkpointing`` is set)."""
        self.student.activation_checkpointing_enable(**kwargs)

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.student.is_activation_checkpointing

    def has_unused_projectors(self) -> bool:
        """True when some projector holds parameters that a step with another teacher leaves unused."""
        return len(self.projectors) > 1 and any(True for _ in self.projectors.parameters())
