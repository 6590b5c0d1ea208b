"""Input preprocessing: the Depth Anything image processor, a model's mean/std and the normalisation of [0, 1] views."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError
from transformers import AutoImageProcessor
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import PILImageResampling
from transformers.utils import is_torchvision_available

from hf_distill.models.configs import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, resolve_model_name

logger = logging.getLogger(__name__)


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
