"""Size and speed figures (hf_distill.evaluation.profile) against hand counts on toy models."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import DepthAnythingForDepthEstimation

from hf_distill.evaluation.compare import ModelComparison
from hf_distill.evaluation.profile import (
    ModelProfile,
    ProfileSettings,
    TensorMemoryCounter,
    count_flops,
    count_parameters,
    latency_summary,
    onnx_model_path,
    onnx_parameters,
    peak_memory_bytes,
    profile_model,
    profile_onnx,
)
from hf_distill.models import tiny_depth_config

SIDE = 8


class ConvLinear(torch.nn.Module):
    """pixel_values (B, 3, 8, 8) -> conv 3x3 to 4 channels -> flatten -> linear to 5 values."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * SIDE * SIDE, 5)

    def forward(self, pixel_values):
        features = self.conv(pixel_values)
        return self.fc(features.flatten(1))


def test_parameters_and_flops_match_hand_counts():
    model = ConvLinear()
    assert count_parameters(model) == (4 * 3 * 9 + 4) + (256 * 5 + 5) == sum(p.numel() for p in model.parameters())
    for batch in (1, 3):
        # 2 FLOPs per multiply-add: conv 4 outputs x 64 pixels x 27 inputs, linear 256 x 5 (biases not counted)
        expected = batch * 2 * (4 * SIDE * SIDE * 3 * 9 + 256 * 5)
        assert count_flops(model, torch.randn(batch, 3, SIDE, SIDE)) == expected


def test_cpu_peak_memory_is_weights_input_and_live_outputs():
    model = ConvLinear()
    batch = 2
    pixel_values = torch.randn(batch, 3, SIDE, SIDE)
    memory, measure = peak_memory_bytes(model, pixel_values)
    weights = 4 * count_parameters(model)
    # the conv output (its flattened view shares the storage) is alive while the linear output is written
    activations = 4 * batch * (4 * SIDE * SIDE + 5)
    assert memory == weights + 4 * pixel_values.numel() + activations
    assert "dispatcher" in measure


def test_memory_counter_counts_a_storage_once_and_releases_it():
    with TensorMemoryCounter() as counter:
        a = torch.ones(100)  # 400 bytes
        view = a[:10]
        b = a * 2  # 400 more
        del a, view, b
    assert (counter.peak, counter.current) == (800, 0)


def test_latency_summary_median_and_p90():
    assert latency_summary([float(v) for v in range(1, 11)]) == {"median": 5.5, "p90": pytest.approx(9.1)}


def test_profile_a_depth_model():
    model = DepthAnythingForDepthEstimation(tiny_depth_config()).train()
    settings = ProfileSettings(height=28, width=42, batch_size=2, warmup=1, repeats=3, throughput_repeats=2)
    profile = profile_model(model, settings, name="tiny")
    assert model.training  # restored
    assert profile.parameters == sum(p.numel() for p in model.parameters())
    assert profile.input_size == (28, 42) and profile.backend == "pytorch"
    assert profile.device == f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"
    threads = torch.get_num_threads()
    one = profile_model(model, ProfileSettings(height=28, width=28, repeats=1, throughput_repeats=1, threads=1))
    assert one.device == "cpu (1 thread)" and one.settings["threads"] == 1 and torch.get_num_threads() == threads
    assert profile.gflops * 1e9 == count_flops(model.eval(), torch.randn(1, 3, 28, 42))
    assert 0 < profile.latency_ms["median"] <= profile.latency_ms["p90"]
    assert profile.throughput > 0 and profile.throughput_batch_size == 2
    weights_mib = 4 * profile.parameters / 2**20
    assert profile.peak_memory_mb > weights_mib
    record = profile.to_dict()
    assert record["latency_ms"] == profile.latency_ms and record["input_size"] == [28, 42]
    assert record["settings"]["repeats"] == 3 and record["settings"]["dtype"] == "float32"
    with pytest.raises(ValueError, match="batch_size"):
        ProfileSettings(height=28, width=28, batch_size=0)


def test_profile_onnx_file_and_folder(tmp_path):
    model = ConvLinear().eval()
    path = tmp_path / "student" / "onnx" / "model.onnx"
    path.parent.mkdir(parents=True)
    torch.onnx.export(model, (torch.randn(1, 3, SIDE, SIDE),), str(path), input_names=["pixel_values"],
                      output_names=["predicted_depth"], dynamic_axes={"pixel_values": {0: "batch"}}, dynamo=False)
    assert onnx_model_path(tmp_path / "student") == path
    assert onnx_parameters(path) == count_parameters(model)
    settings = ProfileSettings(height=SIDE, width=SIDE, batch_size=3, warmup=1, repeats=3, throughput_repeats=2)
    profile = profile_onnx(tmp_path / "student", settings, name="student (onnx)")
    assert profile.backend == "onnxruntime" and profile.name == "student (onnx)"
    assert profile.gflops is None and profile.peak_memory_mb is None
    assert 0 < profile.latency_ms["median"] <= profile.latency_ms["p90"] and profile.throughput > 0
    assert profile.device.startswith("cpu (")
    with pytest.raises(FileNotFoundError, match="onnx/model.onnx"):
        onnx_model_path(tmp_path)


def _profile(name, parameters, gflops, median, p90, throughput, memory, backend="pytorch"):
    return ModelProfile(name=name, backend=backend, device="cpu (2 threads)", input_size=(112, 112),
                        parameters=parameters, gflops=gflops, latency_ms={"median": median, "p90": p90},
                        throughput=throughput, throughput_batch_size=4, peak_memory_mb=memory,
                        memory_measure="weights + input + peak of live operator outputs (torch dispatcher)",
                        settings={"repeats": 10, "warmup": 2, "dtype": "float32"})


def test_comparison_ratios_and_table():
    comparison = ModelComparison(
        profiles={"teacher": _profile("teacher", 1_000_000, 2.0, 20.0, 25.0, 100.0, 50.0),
                  "student": _profile("student", 250_000, 0.5, 10.0, 12.0, 250.0, 20.0),
                  "s.onnx": _profile("s.onnx", 250_000, None, 5.0, 6.0, 400.0, None, backend="onnxruntime")},
        metrics={"teacher": {"nyu": {"abs_rel": 0.10, "delta1": 0.9, "rmse": 0.5, "num_samples": 3}},
                 "student": {"nyu": {"abs_rel": 0.12, "delta1": 0.8, "rmse": 0.6, "num_samples": 3}},
                 "s.onnx": {"nyu": {"abs_rel": 0.12, "delta1": 0.8, "rmse": 0.6, "num_samples": 3}}},
    )
    ratios = comparison.ratios("student")
    assert {k: ratios[k] for k in ("parameters", "gflops", "latency_ms", "throughput", "peak_memory_mb")} == {
        "parameters": 0.25, "gflops": 0.25, "latency_ms": 0.5, "throughput": 2.5, "peak_memory_mb": 0.4}
    assert ratios["nyu"] == {"abs_rel": pytest.approx(1.2), "delta1": pytest.approx(0.8 / 0.9), "rmse": 1.2}
    assert comparison.ratios("s.onnx")["gflops"] is None and comparison.ratios("s.onnx")["peak_memory_mb"] is None
    record = comparison.to_dict()
    assert record["reference"] == "teacher" and record["models"]["student"]["latency_ms"] == {"median": 10.0,
                                                                                              "p90": 12.0}
    lines = comparison.markdown(highlight="student").splitlines()
    assert lines[0].startswith("Measured on cpu (2 threads) with PyTorch eager and onnxruntime, float32")
    assert lines[5:] == [
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| teacher | 112x112 | 1.00M | 2 | 20.0 / 25.0 | 100.0 | 50.0 | 0.1000 | 0.9000 | 0.5000 |",
        "| **student** (this model) | 112x112 | 0.25M (×0.25) | 0.5 (×0.25) | 10.0 / 12.0 (×0.50) | 250.0 (×2.50) "
        "| 20.0 (×0.40) | 0.1200 | 0.8000 | 0.6000 |",
        "| s.onnx (onnxruntime) | 112x112 | 0.25M (×0.25) | — | 5.0 / 6.0 (×0.25) | 400.0 (×4.00) | — | 0.1200 "
        "| 0.8000 | 0.6000 |",
    ]


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    comparison = ModelComparison(profiles={"teacher": _profile("teacher", 10, 1.0, 2.0, 3.0, 4.0, 5.0)},
                                 metrics={"teacher": {"nyu": {"abs_rel": 0.1}}})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install 'hf_distill\[bench\]'"):
        comparison.plot(tmp_path / "plot.png")
