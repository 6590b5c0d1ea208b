"""Evaluation: depth metrics, benchmark readers and model evaluation."""

from hf_distill.evaluation.benchmarks import BENCHMARKS, BenchmarkDataset, BenchmarkSpec, EvalSample, load_benchmark
from hf_distill.evaluation.metrics import METRIC_NAMES, batch_depth_metrics, evaluate_depth
from hf_distill.evaluation.predict import (
    evaluate_model,
    load_model_and_processor,
    predict_depth,
    summarize_rows,
)

__all__ = [
    "BENCHMARKS",
    "METRIC_NAMES",
    "BenchmarkDataset",
    "BenchmarkSpec",
    "EvalSample",
    "batch_depth_metrics",
    "evaluate_depth",
    "evaluate_model",
    "load_benchmark",
    "load_model_and_processor",
    "predict_depth",
    "summarize_rows",
]
