"""Depth models side by side: accuracy on benchmarks next to size and speed.

``compare_models`` evaluates and profiles the models (what ``scripts/evaluate.py --model A,B,...`` runs);
``ModelComparison`` holds, per model (the first is the reference, usually the teacher), its ``ModelProfile`` and
its metrics per benchmark, and writes them as JSON, Markdown tables (one per benchmark, ratios against the first
model) and a PNG of accuracy against latency. An ONNX model (a path ending in ``.onnx``) is evaluated and timed
with onnxruntime through ``OnnxDepthModel``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from transformers.modeling_outputs import DepthEstimatorOutput

from hf_distill.evaluation.benchmarks import BENCHMARKS
from hf_distill.evaluation.predict import evaluate_model, load_model_and_processor, summarize_rows
from hf_distill.evaluation.profile import (
    ONNX_INPUT,
    ModelProfile,
    ProfileSettings,
    is_onnx_model,
    onnx_model_path,
    onnx_session,
    profile_model,
    profile_onnx,
)
from hf_distill.models import PATCH_SIZE, default_image_processor, load_image_processor

TABLE_METRICS = ("abs_rel", "delta1", "rmse")  # the Markdown tables' accuracy columns (the JSON has every metric)
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10"}
_PROFILE_RATIOS = ("parameters", "gflops", "latency_ms", "throughput", "peak_memory_mb")


class OnnxDepthModel(torch.nn.Module):
    """An ONNX depth model run by onnxruntime (CPU) behind the interface ``evaluate_model`` uses:
    ``forward(pixel_values (B, 3, H, W)) -> .predicted_depth (B, H', W')``."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = onnx_model_path(path)
        self.session = onnx_session(self.path)
        # predict_depth_tensors takes the input's device and dtype from the first parameter: float32 on the CPU
        self.anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, pixel_values: torch.Tensor) -> DepthEstimatorOutput:
        (depth, *_) = self.session.run(None, {ONNX_INPUT: pixel_values.detach().float().cpu().numpy()})
        return DepthEstimatorOutput(predicted_depth=torch.from_numpy(depth).to(self.anchor.device))


def load_compared_model(name: str, arch: str | None = None) -> tuple[torch.nn.Module, object]:
    """``(model, image processor)`` for a model reference: a ``.onnx`` file (processor from the model folder that
    holds its ``onnx/``, else Depth Anything's defaults), or whatever ``load_model_and_processor`` takes (``arch``
    only for a weights file)."""
    if is_onnx_model(name):
        path = onnx_model_path(name)
        folder = path.parent.parent if path.parent.name == "onnx" else path.parent
        has_processor = (folder / "preprocessor_config.json").is_file()
        return OnnxDepthModel(path), load_image_processor(str(folder)) if has_processor else default_image_processor()
    return load_model_and_processor(name, arch if Path(name).is_file() else None)


def processing_size(processor, processing_res: int | None = None) -> tuple[int, int]:
    """The square input the model is profiled at: ``processing_res`` (else the processor's target size) rounded to a
    multiple of the patch size."""
    if processing_res is None:
        size = getattr(processor, "size", None) or {}
        height, width = size.get("height", size.get("shortest_edge")), size.get("width", size.get("shortest_edge"))
    else:
        height = width = processing_res
    return tuple(max(PATCH_SIZE, round(side / PATCH_SIZE) * PATCH_SIZE) for side in (height, width))


def profile_compared_model(name: str, model: torch.nn.Module, settings: ProfileSettings) -> ModelProfile:
    """``profile_onnx`` for an ``OnnxDepthModel``, else ``profile_model``."""
    if isinstance(model, OnnxDepthModel):
        return profile_onnx(model.path, settings, name=name)
    return profile_model(model, settings, name=name)


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0 or math.isnan(value) or math.isnan(reference):
        return None
    return value / reference


def _profile_value(profile: ModelProfile, key: str) -> float | None:
    return profile.latency_ms["median"] if key == "latency_ms" else getattr(profile, key)


def _short_name(name: str) -> str:
    path = Path(name)
    if is_onnx_model(name):
        return f"{path.parent.parent.name}/onnx" if path.parent.name == "onnx" else path.name
    return path.name if path.exists() or path.is_absolute() else name


@dataclass
class ModelComparison:
    """Models side by side. ``profiles``: name -> ``ModelProfile``; ``metrics``: name -> benchmark -> metrics. The
    first model is the reference of every ratio."""

    profiles: dict[str, ModelProfile]
    metrics: dict[str, dict[str, dict[str, float]]]

    @property
    def names(self) -> list[str]:
        return list(self.profiles)

    @property
    def benchmarks(self) -> list[str]:
        return list(next(iter(self.metrics.values()), {}))

    def ratios(self, name: str) -> dict:
        """Each figure of ``name`` divided by the first model's: ``parameters``, ``gflops``, ``latency_ms`` (the
        medians), ``throughput``, ``peak_memory_mb`` and, per benchmark, every metric (None where a figure is
        missing)."""
        reference, profile = self.profiles[self.names[0]], self.profiles[name]
        result = {key: _ratio(_profile_value(profile, key), _profile_value(reference, key)) for key in _PROFILE_RATIOS}
        for benchmark, metrics in self.metrics[name].items():
            base = self.metrics[self.names[0]][benchmark]
            result[benchmark] = {k: _ratio(v, base.get(k)) for k, v in metrics.items()
                                 if k not in ("num_samples", "num_skipped")}
        return result

    def to_dict(self) -> dict:
        """``{"reference": first name, "models": {name: {profile fields, "metrics": {...}, "ratios": {...}}}}``."""
        models = {name: {**profile.to_dict(), "metrics": self.metrics[name], "ratios": self.ratios(name)}
                  for name, profile in self.profiles.items()}
        return {"reference": self.names[0], "models": models}

    def settings_text(self) -> str:
        """One sentence: where and how the figures were measured."""
        first = next(iter(self.profiles.values()))
        settings = first.settings
        backends: dict[str, list[str]] = {}
        for profile in self.profiles.values():
            names = backends.setdefault(profile.device, [])
            label = "PyTorch eager" if profile.backend == "pytorch" else profile.backend
            names += [label] if label not in names else []
        devices = "; ".join(f"{device} with {' and '.join(names)}" for device, names in backends.items())
        return (
            f"Measured on {devices}, {settings['dtype']}; latency at batch 1 (median / 90th percentile of "
            f"{settings['repeats']} runs after {settings['warmup']} warm-up), throughput and peak memory at batch "
            f"{first.throughput_batch_size}; ratios (×) against {_short_name(self.names[0])}; peak memory: "
            f"{first.memory_measure}."
        )

    def markdown(self, *, highlight: str | None = None, metrics: tuple[str, ...] = TABLE_METRICS) -> str:
        """The settings sentence and one Markdown table per benchmark: one row per model (``highlight`` marked
        *this model*), size and speed with their ratio against the first model, then ``metrics``."""
        blocks = [self.settings_text()]
        for benchmark in self.benchmarks:
            arrows = [f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics]
            header = ["model", "input", "parameters", "GFLOPs", "latency ms (median / p90)", "images/s",
                      "peak memory MiB", *arrows]
            lines = [f"**{benchmark}**", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            for name, profile in self.profiles.items():
                ratios = self.ratios(name)
                first = name == self.names[0]

                def cell(text: str, key: str) -> str:
                    ratio = ratios.get(key)
                    return text if first or ratio is None else f"{text} (×{ratio:.2f})"

                label = _short_name(name) + (" (onnxruntime)" if profile.backend == "onnxruntime" else "")
                if name == highlight:
                    label = f"**{label}** (this model)"
                values = self.metrics[name][benchmark]
                row = [
                    label,
                    "x".join(map(str, profile.input_size)),
                    cell(f"{profile.parameters / 1e6:.2f}M", "parameters"),
                    cell(f"{profile.gflops:.3g}", "gflops") if profile.gflops is not None else "—",
                    cell(f"{profile.latency_ms['median']:.1f} / {profile.latency_ms['p90']:.1f}", "latency_ms"),
                    cell(f"{profile.throughput:.1f}", "throughput"),
                    cell(f"{profile.peak_memory_mb:.1f}", "peak_memory_mb") if profile.peak_memory_mb else "—",
                    *(f"{values[m]:.4f}" if m in values else "" for m in metrics),
                ]
                lines.append("| " + " | ".join(row) + " |")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def plot(self, path: str | Path, metric: str = "abs_rel") -> Path:
        """A PNG of ``metric`` against the median latency at batch 1: one panel per benchmark, one point per model."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise ImportError(
                "the accuracy-latency plot needs matplotlib: pip install 'hf_distill[bench]' (or matplotlib)"
            ) from error
        benchmarks = self.benchmarks
        figure, axes = plt.subplots(1, len(benchmarks), figsize=(4.5 * len(benchmarks), 3.6), squeeze=False)
        for axis, benchmark in zip(axes[0], benchmarks):
            for name, profile in self.profiles.items():
                x, y = profile.latency_ms["median"], self.metrics[name][benchmark].get(metric, math.nan)
                axis.scatter([x], [y])
                axis.annotate(_short_name(name), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            axis.set_xlabel("latency at batch 1, median (ms)")
            axis.set_ylabel(f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)")
            axis.set_title(benchmark)
            axis.grid(alpha=0.3)
        figure.suptitle(next(iter(self.profiles.values())).device, fontsize=9)
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    def write(self, json_path: str | Path) -> list[Path]:
        """``json_path``, and beside it ``<stem>.md`` (the tables) and ``<stem>_accuracy_latency.png``."""
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        markdown = json_path.with_suffix(".md")
        markdown.write_text(self.markdown() + "\n")
        png = self.plot(json_path.with_name(f"{json_path.stem}_accuracy_latency.png"))
        return [json_path, markdown, png]


def check_model_list(models: list[str]) -> None:
    """ValueError unless ``models`` names at least two distinct models."""
    if len(models) < 2 or len(set(models)) != len(models):
        raise ValueError(f"--model: a comparison needs distinct models, got {models}")


def accelerator_state() -> PartialState:
    # ACCELERATE_USE_CPU (set by `accelerate launch --cpu`) allows CPU multi-process runs (gloo).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def evaluate_benchmarks(
    model, processor, datasets: dict, state: PartialState, *, alignment: str = "disparity", batch_size: int = 1,
    processing_res: int | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[dict]]]:
    """Evaluate ``model`` on each ``{benchmark: samples}``, the samples split across the processes of ``state``
    and the per-sample rows gathered on every process. Returns ``({benchmark: summary}, {benchmark: rows})``."""
    results, all_rows = {}, {}
    for name, samples in datasets.items():
        spec = BENCHMARKS.get(name)  # own data (evaluation.own_data) carries its range itself
        min_depth, max_depth = (spec.min_depth, spec.max_depth) if spec else (samples.min_depth, samples.max_depth)
        with state.split_between_processes(list(range(len(samples)))) as indices:
            _, rows = evaluate_model(
                model,
                processor,
                samples.select(indices) if hasattr(samples, "select") else [samples[i] for i in indices],
                alignment=alignment,
                min_depth=min_depth,
                max_depth=max_depth,
                batch_size=batch_size,
                processing_res=processing_res,
                progress=state.is_local_main_process,
            )
        if state.num_processes > 1:
            rows = gather_object(rows)
        all_rows[name] = rows
        results[name] = summarize_rows(rows)
    return results, all_rows


def compare_models(
    models: list[str],
    datasets: dict,
    *,
    arch: str | None = None,
    alignment: str = "disparity",
    batch_size: int = 1,
    processing_res: int | None = None,
    profile_batch_size: int = 4,
    profile_warmup: int = 2,
    profile_repeats: int = 10,
    profile_threads: int | None = None,
) -> ModelComparison:
    """Evaluate and profile several models, the first being the reference of every ratio (usually the teacher).

    Args:
        models: aliases, Hub ids, model folders, weights files (with ``arch``) or ``.onnx`` files (onnxruntime).
        datasets: ``{benchmark name: samples}`` (``load_benchmark``), each evaluated with its depth range.
        processing_res: the evaluation's and profiling's input size (default: each model's processor size).
        profile_*: ``ProfileSettings``: batch of the throughput and peak-memory figures, untimed and timed forwards
            at batch 1, CPU threads.

    Under a multi-process launch, samples are split across processes and profiling runs on the main process
    only (other processes return a comparison without profiles).
    """
    check_model_list(models)
    state = accelerator_state()
    profiles, metrics = {}, {}
    for name in models:
        model, processor = load_compared_model(name, arch)
        model.to(state.device)
        metrics[name], _ = evaluate_benchmarks(model, processor, datasets, state, alignment=alignment,
                                               batch_size=batch_size, processing_res=processing_res)
        if state.is_main_process:
            height, width = processing_size(processor, processing_res)
            settings = ProfileSettings(height=height, width=width, batch_size=profile_batch_size,
                                       warmup=profile_warmup, repeats=profile_repeats, threads=profile_threads)
            profiles[name] = profile_compared_model(name, model, settings)
        del model
        state.wait_for_everyone()
    return ModelComparison(profiles=profiles, metrics=metrics)
