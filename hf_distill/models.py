"""Depth Anything models: aliases, real and tiny structures, loading (Hub, folders, weights files), a fresh
decoder's start and input normalisation.

Every model is a `transformers.DepthAnythingForDepthEstimation`: a DINOv2 backbone (`model.backbone`), a DPT neck
(`model.neck`) and a depth head (`model.head`). Relative models predict disparity-like maps (B, H, W).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoImageProcessor, DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
from transformers import PretrainedConfig
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import PILImageResampling
from transformers.utils import is_torchvision_available
from transformers.utils import logging as hf_logging

from hf_distill.convert import convert_state_dict, is_hf_state_dict
from hf_distill.data.synthetic import render_scene
from hf_distill.repositories import model_aliases

logger = logging.getLogger(__name__)

# Alias -> Hub id, from the one table of external repositories (hf_distill.repositories).
MODEL_ALIASES: dict[str, str] = model_aliases()

# Models shipped inside the package (the embedded demo's), named like Hub aliases; they load offline.
PACKAGE_ASSETS = Path(__file__).resolve().parent / "assets"
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
_WRAPPER_KEYS = ("model", "state_dict")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


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


def _not_found_message(name: str, reason: str) -> str:
    hub_id = resolve_model_name(name)
    what = f"alias of '{hub_id}'" if hub_id != name else "neither a known alias nor an existing local folder"
    return (
        f"Cannot load depth model '{name}' ({what}): the Hugging Face Hub could not provide it ({reason}). "
        f"Known aliases: {_aliases_text()}. To use local "
        "weights, pass the path of a folder holding config.json and model.safetensors (written by save_pretrained "
        "or scripts/convert_checkpoint.py); an original .pth/.safetensors checkpoint loads with "
        "build_depth_model(arch, checkpoint) or converts with scripts/convert_checkpoint.py."
    )


def _first_line(error: Exception) -> str:
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
        raise ModelNotFoundError(_not_found_message(name_or_path, _first_line(error))) from error


def load_depth_config(name_or_path: str) -> DepthAnythingConfig:
    """Architecture of an alias (offline, `depth_config`), a local folder or config.json, or a Hub id."""
    config = load_model_config(name_or_path)
    if not isinstance(config, DepthAnythingConfig):
        raise ValueError(f"{name_or_path}: config is a '{config.model_type}' config, not 'depth_anything'")
    return config


def model_from_state_dict(
    config: DepthAnythingConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype | None = None,
) -> DepthAnythingForDepthEstimation:
    """Build the model of `config` holding exactly `state_dict` (HF layout, current or legacy key names).

    Loading goes through `from_pretrained`, so legacy Hub key names are renamed as transformers does. Any
    missing, unexpected or mis-shaped key raises ValueError naming `source`.
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    # Mismatched shapes are collected in `info` rather than raised unnamed; transformers' load report is muted
    # because the ValueError below says the same in one line.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = DepthAnythingForDepthEstimation.from_pretrained(
            None, config=config, state_dict=state_dict, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = [
        f"{kind.replace('_', ' ')}: {', '.join(sorted(map(str, keys))[:5])}"
        + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        for kind, keys in info.items()
        if kind in ("missing_keys", "unexpected_keys", "mismatched_keys") and keys
    ]
    if problems:
        raise ValueError(f"{source}: weights do not fit the architecture (wrong arch?); " + "; ".join(problems))
    return model


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


def _check_init(init: str) -> None:
    if init not in INIT_MODES:
        raise ValueError(f"init='{init}' is not one of {INIT_MODES}")


def load_depth_model(
    name_or_path: str, *, init: str = "pretrained", dtype: torch.dtype | None = None
) -> DepthAnythingForDepthEstimation:
    """Load a Depth Anything model from an alias, a Hub id or a local folder.

    init="pretrained": all weights; "backbone": pretrained DINOv2 encoder, neck and head re-initialised;
    "random": the architecture only (aliases need no download, folders need only config.json).
    dtype None keeps transformers' default. An unknown name, or a Hub id that cannot be reached (e.g. with
    HF_HUB_OFFLINE=1), raises ModelNotFoundError (an OSError) listing the aliases.
    """
    _check_init(init)
    if init == "random":
        model = start_fresh_decoder(DepthAnythingForDepthEstimation(load_depth_config(name_or_path)))
        return model if dtype is None else model.to(dtype)
    resolved = resolve_model_name(name_or_path)
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        model = DepthAnythingForDepthEstimation.from_pretrained(resolved, **kwargs)
    except OSError as error:
        if Path(resolved).is_dir():
            raise
        raise ModelNotFoundError(_not_found_message(name_or_path, _first_line(error))) from error
    return reinitialize_decoder(model) if init == "backbone" else model


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



def _model_from_weights_file(
    config: DepthAnythingConfig, path: str | Path, *, dtype: torch.dtype | None = None
) -> DepthAnythingForDepthEstimation:
    """The one loading path of weights files: read, convert an original layout (`hf_distill.convert`), log the
    notes (INFO), build the model of `config` holding exactly those weights."""
    state_dict = read_state_dict(path)
    if is_hf_state_dict(state_dict):
        notes = ["already in Hugging Face layout: no conversion needed"]
    else:
        try:
            state_dict, notes = convert_state_dict(state_dict)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    for note in notes:
        logger.info("%s: note: %s", path, note)
    return model_from_state_dict(config, state_dict, source=str(path), dtype=dtype)


def load_weights_file(model: DepthAnythingForDepthEstimation, path: str | Path) -> DepthAnythingForDepthEstimation:
    """Load a weights file (.safetensors or .pth; HF layout or original Depth Anything layout) into `model`.

    Original layouts are converted with `hf_distill.convert`; every parameter must be covered.
    """
    model.load_state_dict(_model_from_weights_file(model.config, path).state_dict())
    return model


def build_depth_model(
    arch: str,
    checkpoint: str | Path | None = None,
    *,
    init: str = "pretrained",
    dtype: torch.dtype | None = None,
) -> DepthAnythingForDepthEstimation:
    """The seed's `--teacher_models ARCH --teacher_checkpoints FILE`.

    With a checkpoint: the structure of `arch` (alias, folder or config.json; no download for aliases) holding the
    file's weights (any layout `load_weights_file` reads); init="backbone" then re-initialises neck and head.
    Without: `load_depth_model(arch, init=init, dtype=dtype)`.
    """
    if checkpoint is None:
        return load_depth_model(arch, init=init, dtype=dtype)
    _check_init(init)
    if init == "random":
        raise ValueError(f"init='random' contradicts checkpoint='{checkpoint}': a checkpoint supplies the weights")
    model = _model_from_weights_file(load_depth_config(arch), checkpoint, dtype=dtype)
    return reinitialize_decoder(model) if init == "backbone" else model


def convert_checkpoint(checkpoint: str | Path, arch: str, output_dir: str | Path) -> Path:
    """Write an HF model folder (config.json, model.safetensors, preprocessor_config.json) from a checkpoint.

    `arch`: an alias (real structure, offline) or a config.json / model folder. The folder loads with
    `DepthAnythingForDepthEstimation.from_pretrained` with no missing or unexpected keys. Conversion notes are
    logged (logger "hf_distill.models", INFO).
    """
    output_dir = Path(output_dir)
    build_depth_model(arch, checkpoint).save_pretrained(output_dir)
    default_image_processor().save_pretrained(output_dir)
    return output_dir


def default_image_processor(size: int = IMAGE_SIZE) -> BaseImageProcessor:
    """The Depth Anything processor: shorter-side-first resize towards size x size keeping the aspect ratio,
    sides multiples of 14, bicubic, no padding, ImageNet mean/std. Saved as "DPTImageProcessor"."""
    # Imported by name here: `transformers.DPTImageProcessor` needs torchvision and otherwise warns on access.
    if is_torchvision_available():
        from transformers import DPTImageProcessor as processor_class
    else:
        from transformers import DPTImageProcessorPil as processor_class
    return processor_class(
        do_resize=True,
        size={"height": size, "width": size},
        keep_aspect_ratio=True,
        ensure_multiple_of=PATCH_SIZE,
        resample=PILImageResampling.BICUBIC,
        do_pad=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def load_image_processor(name_or_path: str) -> BaseImageProcessor:
    """The image processor saved with a model (a folder's preprocessor_config.json, or the Hub repo's); Depth
    Anything's defaults for a folder without one, or when the Hub cannot be reached (every Depth Anything
    checkpoint uses those settings)."""
    path = Path(resolve_model_name(name_or_path))
    if path.is_dir():
        if (path / "preprocessor_config.json").is_file():
            return AutoImageProcessor.from_pretrained(path)
        return default_image_processor()
    try:
        return AutoImageProcessor.from_pretrained(resolve_model_name(name_or_path))
    except OSError:
        logger.warning("%s: image processor not reachable, using Depth Anything's defaults", name_or_path)
        return default_image_processor()


def image_mean_std(name_or_path: str) -> tuple[list[float], list[float]]:
    """(mean, std) from the model's preprocessor_config.json when there is one (local folder, or Hub/cache),
    else ImageNet's."""
    resolved = resolve_model_name(name_or_path)
    if Path(resolved).is_dir():
        config_file = Path(resolved) / "preprocessor_config.json"
        if not config_file.is_file():
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        try:
            config_file = Path(hf_hub_download(resolved, "preprocessor_config.json"))
        except HFValidationError as error:
            raise FileNotFoundError(f"{name_or_path}: no such folder, and not a valid Hub id") from error
        except OSError:  # offline and not cached, missing repo or file
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
    try:
        settings = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file}: not valid JSON ({error})") from error
    return list(settings.get("image_mean", IMAGENET_MEAN)), list(settings.get("image_std", IMAGENET_STD))


class MeanStd:
    """A model's input normalisation as two (1, 3, 1, 1) float32 tensors, copied once to each device it is used on
    (a copy from the host every call would make the host wait for the device)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        host = torch.device("cpu")
        self._copies = {host: (torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) on ``device``."""
        if device not in self._copies:
            self._copies[device] = tuple(t.to(device) for t in self._copies[torch.device("cpu")])
        return self._copies[device]


def mean_std_tensors(mean: list[float], std: list[float]) -> MeanStd:
    """(mean, std) lists -> the :class:`MeanStd` that :func:`normalize_views` applies."""
    return MeanStd(mean, std)


def normalize_views(views: torch.Tensor, mean_std: MeanStd) -> torch.Tensor:
    """(N, 3, H, W) views in [0, 1] -> a model's input normalisation ``(views - mean) / std``."""
    mean, std = mean_std.on(views.device)
    return (views - mean) / std
