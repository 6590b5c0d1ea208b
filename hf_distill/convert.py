"""Original Depth Anything V2 / Distill-Any-Depth checkpoints -> Hugging Face `DepthAnythingForDepthEstimation`.

Original layout (github.com/DepthAnything/Depth-Anything-V2, `DepthAnythingV2` module):
  encoder `pretrained.*` (Distill-Any-Depth re-saves use `backbone.*`): cls_token, mask_token, pos_embed,
  patch_embed.proj, blocks.N.{norm1, attn.qkv (fused q/k/v rows), attn.proj, ls1.gamma, norm2, mlp.fc1,
  mlp.fc2, ls2.gamma}, norm;
  decoder `depth_head.*`: projects.N, resize_layers.{0,1,3} (2 is an identity), scratch.layerN_rn,
  scratch.refinenetN.{out_conv, resConfUnit1, resConfUnit2}.{conv1, conv2} (refinenet4 runs first, so it is
  HF fusion layer 0), scratch.output_conv1, scratch.output_conv2.{0, 2} (1 and 3 are ReLUs, 4 an identity).
Target names are those of the installed transformers model (`model.state_dict()`). This module only maps keys; it
imports nothing from hf_distill. Files are read, and the converted tensors checked against the architecture, by the
one loading path in `hf_distill.models` (`build_depth_model`, `load_weights_file`, `convert_checkpoint`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

ENCODER_PREFIXES = ("pretrained.", "backbone.")
DECODER_PREFIX = "depth_head."
CLS_TOKEN_KEY = "backbone.embeddings.cls_token"
MASK_TOKEN_KEY = "backbone.embeddings.mask_token"
_HF_MARKERS = ("backbone.embeddings.", "backbone.encoder.layer.", "neck.")

_Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _rules(*pairs: tuple[str, Callable[[re.Match], str]]) -> list[_Rule]:
    return [(re.compile(pattern), target) for pattern, target in pairs]


# Keys after the encoder prefix. attn.qkv is split separately.
_ENCODER_RULES = _rules(
    (r"cls_token", lambda m: CLS_TOKEN_KEY),
    (r"mask_token", lambda m: MASK_TOKEN_KEY),
    (r"pos_embed", lambda m: "backbone.embeddings.position_embeddings"),
    (r"patch_embed\.proj\.(weight|bias)", lambda m: f"backbone.embeddings.patch_embeddings.projection.{m[1]}"),
    (r"norm\.(weight|bias)", lambda m: f"backbone.layernorm.{m[1]}"),
    (
        r"blocks\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
        lambda m: f"backbone.encoder.layer.{m[1]}.{m[2]}.{m[3]}",
    ),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", lambda m: f"backbone.encoder.layer.{m[1]}.attention.o_proj.{m[2]}"),
    (r"blocks\.(\d+)\.ls([12])\.gamma", lambda m: f"backbone.encoder.layer.{m[1]}.layer_scale{m[2]}.lambda1"),
)
_QKV = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)")

# Keys after "depth_head.".
_DECODER_RULES = _rules(
    (r"projects\.([0-3])\.(weight|bias)", lambda m: f"neck.reassemble_stage.layers.{m[1]}.projection.{m[2]}"),
    (r"resize_layers\.([013])\.(weight|bias)", lambda m: f"neck.reassemble_stage.layers.{m[1]}.resize.{m[2]}"),
    (r"scratch\.layer([1-4])_rn\.weight", lambda m: f"neck.convs.{int(m[1]) - 1}.weight"),
    (
        r"scratch\.refinenet([1-4])\.out_conv\.(weight|bias)",
        lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.projection.{m[2]}",
    ),
    (
        r"scratch\.refinenet([1-4])\.resConfUnit([12])\.conv([12])\.(weight|bias)",
        lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.residual_layer{m[2]}.convolution{m[3]}.{m[4]}",
    ),
    (r"scratch\.output_conv1\.(weight|bias)", lambda m: f"head.conv1.{m[1]}"),
    (r"scratch\.output_conv2\.0\.(weight|bias)", lambda m: f"head.conv2.{m[1]}"),
    (r"scratch\.output_conv2\.2\.(weight|bias)", lambda m: f"head.conv3.{m[1]}"),
)


def is_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for Hugging Face layout keys (current or legacy names), False for the original layout."""
    return any(key.startswith(_HF_MARKERS) for key in state_dict)


def _encoder_prefix(state_dict: dict[str, torch.Tensor]) -> str:
    found = [prefix for prefix in ENCODER_PREFIXES if any(key.startswith(prefix) for key in state_dict)]
    if len(found) != 1:
        raise ValueError(
            "an original Depth Anything checkpoint has its encoder under exactly one of "
            f"{' / '.join(ENCODER_PREFIXES)}; found {found or 'neither'}"
        )
    return found[0]


def _map_key(key: str, rules: list[_Rule]) -> str | None:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target(match)
    return None


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original-layout state dict -> (HF-layout state dict, notes).

    The fused qkv (3C, C) / (3C,) splits into q, k, v rows in that order. A missing mask_token (unused in depth
    inference) becomes zeros of shape (1, C) and a note. Keys that match nothing raise ValueError listing a few of
    them; whether the result fits an architecture is checked when a model is built from it.
    """
    prefix = _encoder_prefix(state_dict)
    converted: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            qkv = _QKV.fullmatch(rest)
            if qkv:
                layer, kind = qkv[1], qkv[2]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    converted[f"backbone.encoder.layer.{layer}.attention.{name}.{kind}"] = part.clone()
                continue
            target = _map_key(rest, _ENCODER_RULES)
        elif key.startswith(DECODER_PREFIX):
            target = _map_key(key[len(DECODER_PREFIX):], _DECODER_RULES)
        else:
            target = None
        if target is None:
            unmatched.append(key)
        else:
            converted[target] = tensor
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} checkpoint keys match nothing in the Depth Anything layout: {_listing(unmatched)}"
        )
    notes: list[str] = []
    cls_token = converted.get(CLS_TOKEN_KEY)
    if MASK_TOKEN_KEY not in converted and cls_token is not None:
        converted[MASK_TOKEN_KEY] = torch.zeros(1, cls_token.shape[-1], dtype=cls_token.dtype)
        notes.append("mask_token missing from the checkpoint: filled with zeros (it is unused in depth inference)")
    summary = f"original layout, encoder prefix '{prefix}': {len(state_dict)} tensors -> {len(converted)} HF tensors"
    return converted, [summary, *notes]
