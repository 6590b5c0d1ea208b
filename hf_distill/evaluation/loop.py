"""The evaluation protocol inside a ``transformers.Trainer`` loop (docs/method.md, Training and Evaluation protocol).

Training-time evaluation scores whole images exactly as ``scripts/evaluate.py`` does: ``EvalSampleDataset`` serves
the samples of a benchmark reader (or a ``datasets`` source with a benchmark's mask), ``collate_eval_samples``
batches them, the trainer's ``prediction_step`` predicts at the processor's resolution and resizes each prediction
to its ground truth, and ``DepthMetrics`` (the Trainer's ``compute_metrics`` with ``batch_eval_metrics``) averages
``mean_depth_metrics`` over the batches, holding only running sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import EvalPrediction

from hf_distill.data.collate import collate_views
from hf_distill.evaluation.benchmarks import EvalSample
from hf_distill.evaluation.metrics import METRIC_NAMES, mean_depth_metrics

__all__ = ["DepthMetrics", "EvalAwareCollator", "EvalSampleDataset", "collate_eval_samples"]


class EvalSampleDataset(torch.utils.data.Dataset):
    """Whole-image evaluation samples for the Trainer's loop.

    Each item is ``{"image": PIL RGB image, "reference": float32 (H, W) ground-truth depth in metres with 0 where
    the benchmark's mask is off}``: the mask travels as zeros, the convention of ``mean_depth_metrics``. A sample
    that could not be read (``EvalSample.error``, logged by its reader) becomes a blank image with an all-zero
    reference: skipped, not scored.

    Args:
        samples: a sequence of ``EvalSample`` (``load_benchmark``, ``DatasetSamples``).
        min_depth, max_depth: the range the aligned predictions are clipped to (the benchmark's).
    """

    def __init__(self, samples: Sequence[EvalSample], *, min_depth: float, max_depth: float) -> None:
        if len(samples) == 0:
            raise ValueError("the evaluation data is empty")
        self.samples = samples
        self.min_depth = min_depth
        self.max_depth = max_depth

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        if sample.error is not None:  # skipped: a blank image without a valid pixel, which no metric counts
            return {"image": Image.new("RGB", (14, 14)), "reference": np.zeros((14, 14), np.float32)}
        reference = np.where(sample.valid, sample.depth, 0.0).astype(np.float32)
        return {"image": sample.image, "reference": reference}


def collate_eval_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch evaluation samples: ``images`` (list of PIL images) and ``references`` float32 (B, H, W), each
    reference padded with zeros (invalid) to the largest height and width of the batch."""
    if not samples:
        raise ValueError("collate_eval_samples needs at least one sample")
    height = max(s["reference"].shape[0] for s in samples)
    width = max(s["reference"].shape[1] for s in samples)
    references = torch.zeros(len(samples), height, width)
    for out, sample in zip(references, samples):
        h, w = sample["reference"].shape
        out[:h, :w] = torch.from_numpy(sample["reference"])
    return {"images": [s["image"] for s in samples], "references": references}


class EvalAwareCollator:
    """A Trainer's data collator for training views and evaluation samples alike (the Trainer has one collator
    for both): ``EvalSampleDataset`` items go to ``collate_eval_samples``, others to ``collator``
    (default ``hf_distill.data.collate_views``)."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> None:
        if isinstance(collator, EvalAwareCollator):
            collator = collator.collator
        self.collator = collator or collate_views

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if samples and "reference" in samples[0]:
            return collate_eval_samples(samples)
        return self.collator(samples)


class DepthMetrics:
    """``compute_metrics`` of a Trainer with ``batch_eval_metrics=True``: depth metrics averaged over images.

    Each call scores one batch of ``EvalPrediction(predictions=(B, H, W) predictions, label_ids=(B, H, W)
    references)`` with ``mean_depth_metrics`` (the implementation the ``evaluate`` module wraps, called directly so
    that no map goes through the module's Arrow cache) and keeps per-metric sums weighted by the images counted;
    with ``compute_result=True`` it returns the means and ``num_samples`` and starts over. Pixels of reference 0,
    not finite or negative (the Trainer pads across processes with -100) are invalid.
    """

    def __init__(self, *, alignment: str, min_depth: float, max_depth: float) -> None:
        self.alignment = alignment
        self.min_depth = min_depth
        self.max_depth = max_depth
        self._reset()

    def _reset(self) -> None:
        self._sums = dict.fromkeys(METRIC_NAMES, 0.0)
        self._count = 0

    def __call__(self, eval_pred: EvalPrediction, compute_result: bool = True) -> dict[str, float]:
        predictions, references = eval_pred.predictions, eval_pred.label_ids
        batch = mean_depth_metrics(list(predictions), list(references), alignment=self.alignment,
                                   min_depth=self.min_depth, max_depth=self.max_depth)
        if batch["num_samples"]:
            for name in METRIC_NAMES:
                self._sums[name] += batch[name] * batch["num_samples"]
            self._count += batch["num_samples"]
        if not compute_result:
            return {}
        count = self._count
        summary = {name: self._sums[name] / count if count else float("nan") for name in METRIC_NAMES}
        summary["num_samples"] = count
        self._reset()
        return summary
