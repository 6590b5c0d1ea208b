"""Loading Depth Anything models: from aliases, Hub ids, folders and weights files (HF or original layout)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
from transformers.utils import logging as hf_logging

from hf_distill.convert import convert_state_dict, is_hf_state_dict
from hf_distill.models.configs import (
    INIT_MODES,
    ModelNotFoundError,
    first_line,
    load_depth_config,
    not_found_message,
    resolve_model_name,
)
from hf_distill.models.fresh_decoder import reinitialize_decoder, start_fresh_decoder
from hf_distill.models.processor import default_image_processor

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


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
        raise ModelNotFoundError(not_found_message(name_or_path, first_line(error))) from error
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
    logged (logger "hf_distill.models.loading", INFO).
    """
    output_dir = Path(output_dir)
    build_depth_model(arch, checkpoint).save_pretrained(output_dir)
    default_image_processor().save_pretrained(output_dir)
    return output_dir
