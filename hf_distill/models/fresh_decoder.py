"""A fresh decoder's start: He-initialised neck and head, the head's output level and spread set on generated scenes."""

from __future__ import annotations

import numpy as np
import torch
from transformers import DepthAnythingForDepthEstimation

from hf_distill.data.synthetic import render_scene
from hf_distill.models.configs import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE
from hf_distill.models.processor import mean_std_tensors, normalize_views

# A freshly initialised decoder's raw output (the head's last convolution, before its final ReLU) on generated
# calibration scenes: median FRESH_HEAD_LEVEL, mean absolute deviation FRESH_HEAD_SPREAD x that median. The head ends
# in a ReLU and the distillation losses are scale- and shift-invariant, so nothing else fixes this gauge: a level
# well above the spread keeps every pixel in the ReLU's live range, and a spread far above the float precision keeps
# the depth signal representable in bfloat16 (eps 2^-7; the output of transformers' own init
# varies by about 1e-7 of its level and would be one constant per map).
FRESH_HEAD_LEVEL = 1.0
FRESH_HEAD_SPREAD = 0.2
CALIBRATION_SEEDS = tuple(range(900_000, 900_004))  # generated scenes no training or held-out split uses
CALIBRATION_SIDE = 16 * PATCH_SIZE


def head_calibration_pixels(side: int = CALIBRATION_SIDE) -> torch.Tensor:
    """(4, 3, side, side) generated room scenes (``hf_distill.data.synthetic``), ImageNet-normalised: the fixed
    input on which a fresh head's output level and spread are set."""
    images = [render_scene(seed, side, side).image for seed in CALIBRATION_SEEDS]
    views = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return normalize_views(views, mean_std_tensors(IMAGENET_MEAN, IMAGENET_STD))


def head_pre_activation(model: DepthAnythingForDepthEstimation, pixel_values: torch.Tensor) -> torch.Tensor:
    """The head's last convolution output before the final activation, (B, H, W) float64, with no gradient."""
    captured = []
    hook = model.head.conv3.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values.to(next(model.parameters()).dtype))
    finally:
        hook.remove()
    conv = model.head.conv3
    hidden = captured[0].double()
    return torch.nn.functional.conv2d(hidden, conv.weight.double(), conv.bias.double())[:, 0]


def reaffine_head(
    model: DepthAnythingForDepthEstimation,
    pixel_values: torch.Tensor,
    level: float = FRESH_HEAD_LEVEL,
    spread: float = FRESH_HEAD_SPREAD,
) -> DepthAnythingForDepthEstimation:
    """Rewrite the head's last convolution so that its output on ``pixel_values`` (B, 3, H, W) has median ``level``
    and mean absolute deviation ``spread * level`` (over all pixels of the batch); in place, returns ``model``.

    The convolution's output ``z`` becomes ``a * z + c`` with ``a > 0`` (weights and bias computed in float64, then
    stored in the model's dtype). Wherever ``z`` was positive before and after, the final ReLU passes the same affine
    map, which median/MAD-normalised losses and affine-aligned metrics do not see.
    """
    z = head_pre_activation(model, pixel_values).flatten()
    median = z.median()
    deviation = (z - median).abs().mean()
    if not deviation > 0:
        raise ValueError("the head's output is constant on the calibration input: its spread cannot be set")
    scale = spread * level / deviation
    shift = level - scale * median
    conv = model.head.conv3
    with torch.no_grad():
        conv.bias.copy_(conv.bias.double() * scale + shift)
        conv.weight.copy_(conv.weight.double() * scale)
    return model


def start_fresh_decoder(model: DepthAnythingForDepthEstimation) -> DepthAnythingForDepthEstimation:
    """Initialise neck and head for training from scratch, in place; the backbone is untouched.

    Convolutions get He (Kaiming) normal weights for ReLU networks and zero biases, so activations keep their
    magnitude through the decoder (transformers' N(0, 0.02) shrinks them by orders of magnitude), then
    ``reaffine_head`` sets the output's level and spread on ``head_calibration_pixels``
    (``FRESH_HEAD_LEVEL``, ``FRESH_HEAD_SPREAD``).
    """
    with torch.no_grad():
        for part in (model.neck, model.head):
            for module in part.modules():
                if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    if module.bias is not None:
                        module.bias.zero_()
    return reaffine_head(model, head_calibration_pixels())


def reinitialize_decoder(model: DepthAnythingForDepthEstimation) -> DepthAnythingForDepthEstimation:
    """Re-initialise neck and head in place (``start_fresh_decoder``); the backbone is untouched.

    transformers marks loaded tensors `_is_hf_initialized` so that its init functions skip them; the marks are
    cleared on the decoder first, and its own `_init_weights` runs for the layers ``start_fresh_decoder`` does not
    set (normalisations, if any).
    """
    for part in (model.neck, model.head):
        for module in part.modules():
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                tensor._is_hf_initialized = False
            model._init_weights(module)
    return start_fresh_decoder(model)
