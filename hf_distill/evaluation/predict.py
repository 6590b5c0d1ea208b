"""Running a depth model over images and benchmark samples (docs/method.md, Evaluation protocol)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import DepthAnythingForDepthEstimation

from hf_distill.evaluation.benchmarks import EvalSample
from hf_distill.evaluation.metrics import METRIC_NAMES, evaluate_depth, summarize_rows
from hf_distill.models import build_depth_model, default_image_processor, load_depth_model, load_image_processor


def load_model_and_processor(name_or_path: str, arch: str | None = None):
    """A depth model in eval mode and its image processor.

    Args:
        name_or_path: an alias, a Hub id or a ``from_pretrained`` folder; or a weights file
            (.safetensors/.pth, HF or original layout) together with ``arch``.
        arch: for a weights file: an alias / Hub id (structure built offline) or a folder holding a
            ``config.json`` (and optionally ``preprocessor_config.json``).

    Returns:
        ``(model, image_processor)``.
    """
    path = Path(name_or_path)
    if path.is_file():
        if arch is None:
            raise ValueError(f"{path} is a weights file: also give the architecture (an alias or a config folder)")
        model = build_depth_model(arch, str(path))
        processor = load_image_processor(arch) if Path(arch).is_dir() else default_image_processor()
    else:
        if arch is not None:
            raise ValueError(f"the architecture is only used with a weights file, but {name_or_path} is not a file")
        model = load_depth_model(name_or_path)
        processor = load_image_processor(name_or_path)
    return model.eval(), processor


def _processor_overrides(processing_res: int | None) -> dict:
    if processing_res is None:
        return {}
    if processing_res <= 0:
        raise ValueError(f"processing_res must be positive, got {processing_res}")
    return {
        "size": {"height": processing_res, "width": processing_res},
        "keep_aspect_ratio": True,
        "ensure_multiple_of": 14,
    }


@torch.no_grad()
def predict_depth_tensors(
    model: DepthAnythingForDepthEstimation,
    image_processor,
    images: Sequence[Image.Image],
    processing_res: int | None = None,
    num_forwards: int | None = None,
) -> list[torch.Tensor]:
    """Raw predictions, each a float32 (H, W) tensor on the model's device at its image's size.

    Images are preprocessed by ``image_processor``; with ``processing_res`` its target becomes
    ``processing_res`` squared with the aspect ratio kept (the DPT rule: the side needing the smaller
    change reaches the target) and sides rounded to multiples of 14. One forward runs per group of
    equal-sized images (``forward_groups``), and each prediction is resized back to its image (bicubic).

    ``num_forwards`` (at least the number of groups) pads with forwards whose output is dropped: a model sharded
    across ranks (DeepSpeed ZeRO-3) gathers its weights in every forward, so all ranks must run as many.
    """
    parameter = next(model.parameters())
    overrides = _processor_overrides(processing_res)
    outputs: list[torch.Tensor | None] = [None] * len(images)
    groups = forward_groups(images)
    if num_forwards is not None and num_forwards < len(groups):
        raise ValueError(f"num_forwards={num_forwards} is fewer than the {len(groups)} image sizes of the batch")
    pixel_values = None
    for (width, height), indices in groups.items():
        inputs = image_processor([images[i] for i in indices], return_tensors="pt", **overrides)
        pixel_values = inputs["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
        predicted = model(pixel_values=pixel_values).predicted_depth.float()  # (B, h, w)
        resized = F.interpolate(predicted[:, None], size=(height, width), mode="bicubic", align_corners=False)[:, 0]
        for i, prediction in zip(indices, resized):
            outputs[i] = prediction
    for _ in range(len(groups), num_forwards or 0):
        if pixel_values is None:  # no image here: the smallest input the model takes
            patch = model.config.patch_size if hasattr(model, "config") else 14
            pixel_values = torch.zeros(1, 3, patch, patch, device=parameter.device, dtype=parameter.dtype)
        model(pixel_values=pixel_values[:1])
    return outputs  # type: ignore[return-value]


def forward_groups(images: Sequence[Image.Image]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``images`` by image size (width, height): one forward per group."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.size, []).append(index)
    return groups


def predict_depth(
    model: DepthAnythingForDepthEstimation,
    image_processor,
    images: Sequence[Image.Image],
    processing_res: int | None = None,
) -> list[np.ndarray]:
    """Raw relative predictions (disparity-like), float32 (H, W) numpy arrays at each image's size."""
    return [p.cpu().numpy() for p in predict_depth_tensors(model, image_processor, images, processing_res)]


def skipped_row(sample: EvalSample) -> dict:
    """The per-sample row of a sample that could not be read: NaN metrics and its ``error``."""
    return {"name": sample.name, **dict.fromkeys(METRIC_NAMES, math.nan), "error": sample.error}


def evaluate_model(
    model: DepthAnythingForDepthEstimation,
    image_processor,
    samples: Sequence[EvalSample],
    *,
    alignment: str = "disparity",
    min_depth: float,
    max_depth: float,
    batch_size: int = 1,
    processing_res: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Evaluate a model on a (lazy) sequence of samples, reading ``batch_size`` samples at a time.

    Returns:
        ``(summary, rows)``: the mean of every metric and ``num_samples``; one row per sample with
        ``name`` and its metrics. A sample carrying an ``error`` is not predicted: its row has NaN metrics and the
        ``error``, and the summary counts it in ``num_skipped``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = []
    with tqdm(total=len(samples), disable=not progress, desc="evaluating", unit="img") as bar:
        for start in range(0, len(samples), batch_size):
            batch = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
            rows += [skipped_row(s) for s in batch if s.error is not None]
            batch = [s for s in batch if s.error is None]
            predictions = predict_depth_tensors(model, image_processor, [s.image for s in batch], processing_res)
            for sample, prediction in zip(batch, predictions):
                metrics = evaluate_depth(
                    prediction,
                    torch.from_numpy(sample.depth).to(prediction.device),
                    torch.from_numpy(sample.valid).to(prediction.device),
                    alignment=alignment,
                    min_depth=min_depth,
                    max_depth=max_depth,
                )
                rows.append({"name": sample.name, **metrics})
            bar.update(min(batch_size, len(samples) - start))
    return summarize_rows(rows), rows
