"""Relative monocular depth metrics as an ``evaluate`` module (docs/method.md, Evaluation protocol).

Load it with ``hf_distill.evaluation.load_depth_metric(...)`` (``evaluate.load`` on this folder). It wraps
``hf_distill.evaluation.metrics.mean_depth_metrics``, the implementation behind ``scripts/evaluate.py``.
"""

import datasets
import evaluate

from hf_distill.evaluation.metrics import ALIGNMENTS, mean_depth_metrics

_DESCRIPTION = """
Zero-shot relative depth metrics: each prediction (already at its reference's size) is aligned to the ground truth
by a least-squares scale and shift (in disparity space by default), clipped to [min_depth, max_depth], and scored on
the valid pixels with abs_rel, sq_rel, rmse, rmse_log, log10 and delta1/2/3 (thresholds 1.25, 1.25^2, 1.25^3). The
result is the mean over images; images without a valid pixel are left out and not counted in num_samples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of (H, W) raw predictions (relative depth models: disparity-like, larger = closer).
    references: list of (H, W) ground-truth depth maps in metres, each the size of its prediction. A pixel that is
        0 or not finite is invalid: encode a benchmark's mask (e.g. NYUv2's Eigen crop) as zeros.
Module arguments (given to load_depth_metric / evaluate.load):
    alignment: "disparity" (default), "depth" or "none" (metric predictions).
    min_depth, max_depth: the benchmark's depth range (default 1e-3 and 10 metres, NYUv2's).
Returns:
    abs_rel, sq_rel, rmse, rmse_log, log10, delta1, delta2, delta3: means over images; num_samples: images averaged.
Examples:
    >>> from hf_distill.evaluation import load_depth_metric
    >>> metric = load_depth_metric(alignment="disparity", min_depth=1e-3, max_depth=10.0)
    >>> metric.compute(predictions=[pred_map], references=[depth_map])["abs_rel"]
"""

_CITATION = """
@article{he2025distill,
  title   = {Distill Any Depth: Distillation Creates a Stronger Monocular Depth Estimator},
  author  = {He, Xiankang and Guo, Dongyan and Li, Hongji and Li, Ruibo and Cui, Ying and Zhang, Chi},
  journal = {arXiv preprint arXiv:2502.19204},
  year    = {2025}
}
"""

_MAP = datasets.List(datasets.List(datasets.Value("float32")))


class DepthMetric(evaluate.Metric):
    """Mean depth metrics over images; see the module docstring."""

    def __init__(self, alignment: str = "disparity", min_depth: float = 1e-3, max_depth: float = 10.0, **kwargs):
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if not min_depth < max_depth:
            raise ValueError(f"min_depth must be below max_depth, got {min_depth} and {max_depth}")
        self.alignment = alignment
        self.min_depth = min_depth
        self.max_depth = max_depth
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _MAP, "references": _MAP}),
            reference_urls=["https://arxiv.org/abs/2502.19204"],
        )

    def _compute(self, predictions, references) -> dict:
        return mean_depth_metrics(predictions, references, alignment=self.alignment, min_depth=self.min_depth,
                                  max_depth=self.max_depth)
