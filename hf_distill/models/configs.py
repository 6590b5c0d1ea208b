"""Model names and structures: aliases, shipped models, the real and tiny Depth Anything configs, config loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import AutoConfig, DepthAnythingConfig, Dinov2Config, PretrainedConfig

from hf_distill.repositories import model_aliases

# Alias -> Hub id, from the one table of external repositories (hf_distill.repositories).
MODEL_ALIASES: dict[str, str] = model_aliases()

# Models shipped inside the package (the embedded demo's), named like Hub aliases; they load offline.
PACKAGE_ASSETS = Path(__file__).resolve().parents[1] / "assets"
PACKAGE_MODELS: dict[str, Path] = {
    "demo-teacher": PACKAGE_ASSETS / "demo-teacher",
    "demo-student": PACKAGE_ASSETS / "demo-student",  # config and processor only: trained from random weights
}
# A real photograph shipped with the package (CC0, see assets/examples/README.md): export checks, the app's examples.
EXAMPLE_PHOTO = PACKAGE_ASSETS / "examples" / "coffee.jpg"

INIT_MODES = ("pretrained", "backbone", "random")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PATCH_SIZE = 14
IMAGE_SIZE = 518


class ModelNotFoundError(OSError):
    """A model name that is neither an alias, an existing local folder, nor a Hub id that can be reached."""


@dataclasses.dataclass(frozen=True)
class _Structure:
    """The numbers that define a Depth Anything architecture (out_indices count layers from 1)."""

    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    out_indices: tuple[int, ...]
    neck_hidden_sizes: tuple[int, ...]
    fusion_hidden_size: int
    head_hidden_size: int = 32


_V2_SMALL = _Structure(384, 6, 12, (3, 6, 9, 12), (48, 96, 192, 384), 64)
_V2_BASE = _Structure(768, 12, 12, (3, 6, 9, 12), (96, 192, 384, 768), 128)
_V2_LARGE = _Structure(1024, 16, 24, (5, 12, 18, 24), (256, 512, 1024, 1024), 256)

# Depth Anything V1 reads the last four layers; V2 and Distill-Any-Depth spread them over the depth.
_STRUCTURES: dict[str, _Structure] = {
    "depthanything-small": _V2_SMALL,
    "depthanything-base": _V2_BASE,
    "depthanything-large": _V2_LARGE,
    "depthanything-v1-small": dataclasses.replace(_V2_SMALL, out_indices=(9, 10, 11, 12)),
    "depthanything-v1-base": dataclasses.replace(_V2_BASE, out_indices=(9, 10, 11, 12)),
    "depthanything-v1-large": dataclasses.replace(_V2_LARGE, out_indices=(21, 22, 23, 24)),
    "distill-any-depth-small": _V2_SMALL,
    "distill-any-depth-large": _V2_LARGE,
}

_TINY_LIKE = {"small": _V2_SMALL, "base": _V2_BASE, "large": _V2_LARGE}
# hidden, heads, layers, neck, fusion, head: the real ratios (neck vs hidden, large has more layers), scaled down.
_TINY_DIMS = {
    "small": (32, 2, 4, (4, 8, 16, 32), 16, 8),
    "base": (48, 3, 4, (6, 12, 24, 48), 24, 8),
    "large": (64, 4, 8, (16, 32, 64, 64), 24, 8),
}


def _aliases_text() -> str:
    return ", ".join([*MODEL_ALIASES, *PACKAGE_MODELS])


def not_found_message(name: str, reason: str) -> str:
    """What a ``ModelNotFoundError`` says about ``name``: what it resolved to, why the Hub failed, the aliases."""
    hub_id = resolve_model_name(name)
    what = f"alias of '{hub_id}'" if hub_id != name else "neither a known alias nor an existing local folder"
    return (
        f"Cannot load depth model '{name}' ({what}): the Hugging Face Hub could not provide it ({reason}). "
        f"Known aliases: {_aliases_text()}. To use local "
        "weights, pass the path of a folder holding config.json and model.safetensors (written by save_pretrained "
        "or scripts/convert_checkpoint.py); an original .pth/.safetensors checkpoint loads with "
        "build_depth_model(arch, checkpoint) or converts with scripts/convert_checkpoint.py."
    )


def first_line(error: Exception) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolve_model_name(name_or_path: str) -> str:
    """Alias -> Hub id (`MODEL_ALIASES`) or shipped folder (`PACKAGE_MODELS`); a local folder or any other Hub id
    is returned unchanged."""
    if name_or_path in PACKAGE_MODELS:
        return str(PACKAGE_MODELS[name_or_path])
    return MODEL_ALIASES.get(name_or_path, name_or_path)


def _alias_of(name: str) -> str | None:
    """The alias naming `name` itself or its Hub id, else None."""
    if name in MODEL_ALIASES:
        return name
    return next((alias for alias, hub_id in MODEL_ALIASES.items() if hub_id == name), None)


def _make_config(structure: _Structure, **config_kwargs) -> DepthAnythingConfig:
    backbone_config = Dinov2Config(
        hidden_size=structure.hidden_size,
        num_attention_heads=structure.num_attention_heads,
        num_hidden_layers=structure.num_hidden_layers,
        mlp_ratio=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        layerscale_value=1.0,
        out_indices=list(structure.out_indices),
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    kwargs = {"depth_estimation_type": "relative", "max_depth": 1, **config_kwargs}
    return DepthAnythingConfig(
        backbone_config=backbone_config,
        patch_size=PATCH_SIZE,
        reassemble_hidden_size=structure.hidden_size,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=list(structure.neck_hidden_sizes),
        fusion_hidden_size=structure.fusion_hidden_size,
        head_hidden_size=structure.head_hidden_size,
        **kwargs,
    )


def depth_config(arch: str) -> DepthAnythingConfig:
    """The real structure of an alias (or of its Hub id), built from constants without any download.

    Raises ValueError listing the aliases for any other name.
    """
    alias = _alias_of(arch)
    if alias is None:
        raise ValueError(f"Unknown architecture '{arch}'. Known aliases: {_aliases_text()}.")
    return _make_config(_STRUCTURES[alias])


def _scaled_out_indices(real: _Structure, num_hidden_layers: int) -> tuple[int, ...]:
    indices = tuple(round(index * num_hidden_layers / real.num_hidden_layers) for index in real.out_indices)
    if any(a >= b for a, b in zip(indices, indices[1:])) or indices[0] < 1:
        raise ValueError(
            f"num_hidden_layers={num_hidden_layers} is too few to spread {len(indices)} out_indices; "
            "use at least 4 layers or pass out_indices explicitly"
        )
    return indices


def tiny_depth_config(like: str = "small", **overrides) -> DepthAnythingConfig:
    """A few-hundred-thousand-parameter Depth Anything with the structure of the V2 `like` model, for tests.

    Same stages as the real model: 4 out_indices, a 4-level neck (reassemble factors 4, 2, 1, 1/2), fusion and head;
    patch 14 and image_size 518 (DINOv2 interpolates its position embeddings to any multiple of 14).
    The out_indices keep the V2 pattern of `like` scaled to the tiny depth: index i of an L-layer real model becomes
    round(i * layers / L). Small/base (12 layers, [3, 6, 9, 12]) -> 4 layers [1, 2, 3, 4]; large (24 layers,
    [5, 12, 18, 24]) -> 8 layers [2, 4, 6, 8].
    Defaults (about 174k / 343k / 710k parameters): small hidden 32 / 2 heads / 4 layers, neck [4, 8, 16, 32],
    fusion 16; base hidden 48 / 3 heads / 4 layers, neck [6, 12, 24, 48], fusion 24; large hidden 64 / 4 heads /
    8 layers, neck [16, 32, 64, 64], fusion 24; head_hidden_size 8.

    `overrides` may set any of hidden_size, num_attention_heads, num_hidden_layers, out_indices,
    neck_hidden_sizes, fusion_hidden_size, head_hidden_size (changing num_hidden_layers alone re-scales the
    out_indices) and any other `DepthAnythingConfig` field (e.g. depth_estimation_type, max_depth).
    """
    if like not in _TINY_LIKE:
        raise ValueError(f"like='{like}' is not one of {sorted(_TINY_LIKE)}")
    structure_fields = {field.name for field in dataclasses.fields(_Structure)}
    config_fields = {field.name for field in dataclasses.fields(DepthAnythingConfig)} - {
        "backbone_config",
        "reassemble_hidden_size",
    }
    unknown = sorted(set(overrides) - structure_fields - config_fields)
    if unknown:
        raise ValueError(f"tiny_depth_config got unknown overrides {unknown}")

    hidden, heads, layers, neck, fusion, head = _TINY_DIMS[like]
    structure_overrides = {key: value for key, value in overrides.items() if key in structure_fields}
    layers = structure_overrides.get("num_hidden_layers", layers)
    structure = _Structure(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        out_indices=_scaled_out_indices(_TINY_LIKE[like], layers),
        neck_hidden_sizes=neck,
        fusion_hidden_size=fusion,
        head_hidden_size=head,
    )
    structure = dataclasses.replace(structure, **structure_overrides)
    config_kwargs = {key: value for key, value in overrides.items() if key not in structure_fields}
    return _make_config(structure, **config_kwargs)


def load_model_config(name_or_path: str) -> PretrainedConfig:
    """Config of any model type: an alias (offline, `depth_config`), a local folder or config.json, or a Hub id."""
    if _alias_of(name_or_path) is not None:
        return depth_config(name_or_path)
    resolved = resolve_model_name(name_or_path)
    local = Path(resolved).exists()
    try:
        return AutoConfig.from_pretrained(resolved)
    except OSError as error:
        if local:
            raise
        raise ModelNotFoundError(not_found_message(name_or_path, first_line(error))) from error


def load_depth_config(name_or_path: str) -> DepthAnythingConfig:
    """Architecture of an alias (offline, `depth_config`), a local folder or config.json, or a Hub id."""
    config = load_model_config(name_or_path)
    if not isinstance(config, DepthAnythingConfig):
        raise ValueError(f"{name_or_path}: config is a '{config.model_type}' config, not 'depth_anything'")
    return config
