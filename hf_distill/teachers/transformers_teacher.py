"""Teachers that are ``transformers`` depth models (Depth Anything, DPT/MiDaS, ZoeDepth, Depth Pro)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from transformers import AutoModelForDepthEstimation, PreTrainedModel

from hf_distill.models import (
    ModelNotFoundError,
    build_depth_model,
    image_mean_std,
    mean_std_tensors,
    normalize_views,
    resolve_model_name,
)
from hf_distill.teachers.base import Teacher, TeacherFamily, resize_bilinear
from hf_distill.teachers.spaces import to_disparity
from hf_distill.token_tap import EncoderTokenTap


class TransformersDepthTeacher(Teacher):
    """Any ``AutoModelForDepthEstimation`` whose family is declared: views are resized to the sizes the network
    accepts (``TeacherFamily.input_size``), normalised with the model's own mean/std, and the prediction is brought
    back to the views' size and converted to disparity. Depth Anything models also give encoder tokens.

    Args:
        model: the depth model (``predicted_depth`` (N, h, w)).
        family: its row in ``TEACHER_FAMILIES``.
        mean_std: the model's input normalisation (mean, std), three values each.
    """

    def __init__(self, model: PreTrainedModel, family: TeacherFamily, mean_std: tuple[list[float], list[float]]):
        super().__init__(family)
        self.model = model
        self._token_tap = None
        if family.model_type == "depth_anything":
            # DINOv2 attention through torch's fused kernels (flash / memory-efficient); only the backbone attends.
            model.set_attn_implementation({"backbone_config": "sdpa"})
        if family.tokens:
            self.token_width = model.config.backbone_config.hidden_size
            # Attached for the model's lifetime, before any torch.compile (see EncoderTokenTap).
            self._token_tap = EncoderTokenTap(model)
        # Plain attributes, not buffers: they stay float32 when the teacher is cast to bf16.
        self._mean_std = mean_std_tensors(*mean_std)

    def forward(self, views: Tensor, want_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        self.check_tokens(want_tokens)
        height, width = views.shape[-2:]
        dtype = next(self.model.parameters()).dtype
        pixels = normalize_views(resize_bilinear(views, self.family.input_size(self.model.config, height, width)),
                                 self._mean_std).to(dtype)
        prediction = self.model(pixel_values=pixels).predicted_depth
        tokens = self._token_tap.pop() if self._token_tap is not None else None  # popped: no activations kept
        tokens = tokens if want_tokens else None  # cast by the caller, after keeping the tokens it needs
        return resize_bilinear(to_disparity(prediction, self.family.predicts), (height, width)), tokens

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily) -> TransformersDepthTeacher:
        if family.model_type == "depth_anything":
            model = build_depth_model(name, checkpoint)  # aliases, folders, Hub ids, original checkpoints
        elif checkpoint is not None:
            raise ValueError(f"--teacher_checkpoints {checkpoint}: only Depth Anything structures take a separate "
                             f"weights file; pass the {family.name} model as a folder or Hub id in --teacher_models.")
        else:
            try:
                model = AutoModelForDepthEstimation.from_pretrained(resolve_model_name(name))
            except OSError as error:
                if Path(name).is_dir():
                    raise
                raise ModelNotFoundError(f"Cannot load teacher '{name}' from the Hugging Face Hub: {error}") from error
        return cls(model, family, image_mean_std(name))
