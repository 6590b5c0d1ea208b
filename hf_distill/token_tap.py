"""The encoder-token tap: a Depth Anything model's final-layer patch tokens, captured during its normal forward
(the feature-alignment term's input, for teachers and the student alike)."""

from __future__ import annotations

import torch
from transformers import DepthAnythingForDepthEstimation


class EncoderTokenTap:
    """Captures the final-layer encoder patch tokens of a Depth Anything model during its normal forward.

    A forward hook on `model.backbone` (Dinov2Backbone). In transformers 5.x the backbone returns `feature_maps`,
    one (B, 1 + N, C) tensor per out_index (Depth Anything sets reshape_hidden_states=False), each after the
    backbone layernorm (apply_layernorm=True) with the CLS token first. The tap keeps `feature_maps[-1][:, 1:]`:
    tokens (B, N, C), N = (H / 14) * (W / 14), row-major over the patch grid. That is the final encoder layer
    because the last out_index is the last layer in every V1/V2 structure; other configs are refused.
    The tokens keep their autograd graph (a student's feature loss needs it).

        with EncoderTokenTap(model) as tap:
            out = model(pixel_values)
            tokens = tap.tokens

    A tap that lives as long as its model (the student wrapper's, the trainer's teacher taps) must be attached
    before `torch.compile` sees the model: dynamo does not guard on hooks (`skip_nnmodule_hook_guards`), so a hook
    added to an already compiled model is never called. Such a tap hands its tokens over with `pop()`.
    """

    def __init__(self, model: DepthAnythingForDepthEstimation) -> None:
        backbone_config = model.config.backbone_config
        last_index = backbone_config.out_indices[-1]
        if last_index != backbone_config.num_hidden_layers:
            raise ValueError(
                f"EncoderTokenTap needs the last out_index to be the last encoder layer "
                f"({backbone_config.num_hidden_layers}), got out_indices={list(backbone_config.out_indices)}"
            )
        self._tokens: torch.Tensor | None = None
        self._handle = model.backbone.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, inputs: tuple, output) -> None:
        self._tokens = output.feature_maps[-1][:, 1:]

    @property
    def tokens(self) -> torch.Tensor:
        """Patch tokens (B, N, C) of the latest forward."""
        if self._tokens is None:
            raise RuntimeError("EncoderTokenTap has seen no forward pass yet")
        return self._tokens

    def pop(self) -> torch.Tensor:
        """Patch tokens (B, N, C) of the latest forward, forgotten by the tap (it holds no activations after)."""
        tokens = self.tokens
        self._tokens = None
        return tokens

    def remove(self) -> None:
        """Detach the hook (done on leaving the `with` block)."""
        self._handle.remove()

    def __enter__(self) -> EncoderTokenTap:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
