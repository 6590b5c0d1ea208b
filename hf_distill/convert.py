"""Original Depth Anything V2 / Distill-Any-Depth checkpoints -> Hugging Face `DepthAnythingForDepthEstimation`.

Original layout (github.com/DepthAnything/Depth-Anything-V2, `DepthAnythingV2` module):
  encoder `pretrained.*` (Distill-Any-Depth re-saves use `backbone.*`): cls_token, mask_token, pos_embed,
  patch_embed.proj, blocks.N.{norm1, attn.qkv (fused q/k/v rows), attn.proj, ls1.gamma, norm2, mlp.fc1,
  mlp.fc2, ls2.gamma}, norm;
  decoder `depth_head.*`: projects.N, resize_layers.{0,1,3} (2 is an identity), scratch.layerN_rn,
  scratch.refinenetN.{out_conv, resConfUnit1, resConfUnit2}.{conv1, conv2} (refinenet4 runs first, so it is
  HF fusion layer 0), scratch.output_conv1, scratch.output_conv2.{0, 2} (1 and 3 are ReLUs, 4 an identity).
Target names are those of the installed transformers model (`model.state_dict()`); every converted state dict is
checked against a meta-device instance of the architecture.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

logger = logging.getLogger(__name__)

ENCODER_PREFIXES = ("pretrained.", "backbone.")
DECODER_PREFIX = "depth_head."
MASK_TOKEN_KEY = "backbone.embeddings.mask_token"
_HF_MARKERS = ("backbone.embeddings.", "backbone.encoder.layer.", "neck.")
_WRAPPER_KEYS = ("model", "state_dict")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

_Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _rules(*pairs: tuple[str, Callable[[re.Match], str]]) -> list[_Rule]:
    return [(re.compile(pattern), target) for pattern, target in pairs]


# Keys after the encoder prefix. attn.qkv is split separately.
_ENCODER_RULES = _rules(
    (r"cls_token", lambda m: "backbone.embeddings.cls_token"),
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


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a torch.load result: top level, or under "model" / "state_dict"."""
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (at top level or under 'model' / 'state_dict')")
    return loaded


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth/.pt/.bin/.ckpt file (the latter via torch.load(weights_only=True)).

    A DistributedDataParallel `module.` prefix on every key is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        state_dict = load_file(path)
    elif path.suffix in _TORCH_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused it (it pickles more than tensors: "
                f"{str(error).strip().splitlines()[0]}); re-save only the state dict, or as safetensors"
            ) from error
        state_dict = _unwrap(loaded, path)
    else:
        raise ValueError(f"{path}: unsupported checkpoint format '{path.suffix}' (use .safetensors or .pth)")
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict


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


def _expected_shapes(config: DepthAnythingConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    return {key: tensor.shape for key, tensor in model.state_dict().items()}


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], config: DepthAnythingConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original-layout state dict -> (HF state dict for `config`, notes).

    The fused qkv (3C, C) / (3C,) splits into q, k, v rows in that order. A missing mask_token (unused in depth
    inference) becomes zeros and a note. Keys that match nothing, missing keys, keys the architecture lacks and
    shape mismatches raise ValueError listing a few of them.
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

    expected = _expected_shapes(config)
    notes = [f"original layout, encoder prefix '{prefix}': {len(state_dict)} tensors -> {len(expected)} HF tensors"]
    if MASK_TOKEN_KEY not in converted:
        dtype = next(iter(converted.values())).dtype
        converted[MASK_TOKEN_KEY] = torch.zeros(expected[MASK_TOKEN_KEY], dtype=dtype)
        notes.append("mask_token missing from the checkpoint: filled with zeros (it is unused in depth inference)")
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    mismatched = [
        f"{key} {tuple(tensor.shape)} vs {tuple(expected[key])}"
        for key, tensor in converted.items()
        if key in expected and tensor.shape != expected[key]
    ]
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing", missing),
            ("not in this architecture", extra),
            ("shape checkpoint vs architecture", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError("checkpoint does not match the architecture (wrong --arch?); " + "; ".join(problems))
    return converted, notes


def load_hf_state_dict(
    path: str | Path, config: DepthAnythingConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a weights file and return (HF-layout state dict, notes); HF-layout files pass through unchanged."""
    state_dict = read_state_dict(path)
    if is_hf_state_dict(state_dict):
        return state_dict, ["already in Hugging Face layout: no conversion needed"]
    try:
        return convert_state_dict(state_dict, config)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def convert_checkpoint(checkpoint: str | Path, arch: str, output_dir: str | Path) -> Path:
    """Write an HF model folder (config.json, model.safetensors, preprocessor_config.json) from a checkpoint.

    `arch`: an alias (real structure, offline) or a config.json / model folder. The folder loads with
    `DepthAnythingForDepthEstimation.from_pretrained` with no missing or unexpected keys. Notes are logged
    (logger "hf_distill.convert", INFO).
    """
    # Imported here because hf_distill.models imports this module.
    from hf_distill.models import default_image_processor, load_depth_config, model_from_state_dict

    config = load_depth_config(arch)
    state_dict, notes = load_hf_state_dict(checkpoint, config)
    model = model_from_state_dict(config, state_dict, source=str(checkpoint))
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    default_image_processor().save_pretrained(output_dir)
    for note in notes:
        logger.info("note: %s", note)
    return output_dir
