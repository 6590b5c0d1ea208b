"""Evaluation: depth metrics, benchmark readers, model evaluation, and size and speed next to accuracy."""

from hf_distill.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkDataset,
    BenchmarkSpec,
    DatasetSamples,
    EvalSample,
    load_benchmark,
)
from hf_distill.evaluation.ground_truth import GroundTruthDeclaration, read_ground_truth_file
from hf_distill.evaluation.own_data import load_dataset_samples, load_folder_samples
from hf_distill.evaluation.compare import ModelComparison, OnnxDepthModel, compare_models
from hf_distill.evaluation.metrics import (
    METRIC_NAMES,
    batch_depth_metrics,
    evaluate_depth,
    load_depth_metric,
    mean_depth_metrics,
    summarize_rows,
)
from hf_distill.evaluation.predict import evaluate_model, load_model_and_processor, predict_depth
from hf_distill.evaluation.profile import ModelProfile, ProfileSettings, profile_model, profile_onnx

__all__ = [
    "BENCHMARKS",
    "METRIC_NAMES",
    "BenchmarkDataset",
    "BenchmarkSpec",
    "DatasetSamples",
    "EvalSample",
    "GroundTruthDeclaration",
    "ModelComparison",
    "ModelProfile",
    "OnnxDepthModel",
    "ProfileSettings",
    "batch_depth_metrics",
    "compare_models",
    "evaluate_depth",
    "evaluate_model",
    "load_benchmark",
    "load_dataset_samples",
    "load_folder_samples",
    "load_depth_metric",
    "load_model_and_processor",
    "mean_depth_metrics",
    "predict_depth",
    "profile_model",
    "profile_onnx",
    "read_ground_truth_file",
    "summarize_rows",
]
