"""benchmarks/gpu_suite.py end to end at tiny sizes on CPU: the GPU call must not fail on a typo."""

from __future__ import annotations

import json
import runpy
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def suite_function(name: str):
    return runpy.run_path(str(SUITE), run_name="gpu_suite")[name]


@pytest.mark.parametrize(
    "device_name, label, tflops",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", "H100 NVL", 835.0),
        ("NVIDIA H200", "H200 SXM", 989.4),
        ("NVIDIA GH200 480GB", "GH200", 989.4),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
        ("NVIDIA A100-PCIE-40GB", "A100", 312.0),
        ("NVIDIA L40S", "L40S", 362.05),
        ("NVIDIA L4", "L4", 121.0),
    ],
)
def test_peak_table_matches_device_names(device_name, label, tflops):
    assert suite_function("lookup_peak")(device_name) == (label, tflops)


def test_unknown_device_and_bad_flags(capsys):
    assert suite_function("lookup_peak")("Tesla T4") is None
    with pytest.raises(SystemExit):
        suite_function("parse_args")(["--pairs", "large:huge"])
    assert "--pairs large:huge: expected teacher:student" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite_function("parse_args")(["--size", "500"])
    assert "--size must be a positive multiple of 14" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("gpu_suite")
    # Compiled cases with dynamo's eager backend here (the 2-step --torch_compile training test covers aot_eager).
    command = [sys.executable, str(SUITE), "--tiny", "--output_dir", str(output_dir), "--compile_backend", "eager",
               "--peak_tflops", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((output_dir / "gpu_suite.json").read_text())
    return report, (output_dir / "gpu_suite.md").read_text(), result.stdout


def test_tiny_suite_runs_every_case_through_the_trainer(tiny_run):
    report, _, stdout = tiny_run
    assert report["tiny"] and report["device"] == "cpu"
    assert (report["peak_bf16_tflops"], report["peak_source"]) == (2.0, "--peak_tflops")
    assert "Dense bf16 peaks (TFLOP/s): H100 PCIe 756" in stdout
    cases = report["cases"]
    matrix = [(c["teacher"], c["student"], c["torch_compile"], c["activation_checkpointing"]) for c in cases]
    assert matrix == [(t, s, compiled, ckpt) for t, s in (("large", "base"), ("large", "small"))
                      for compiled in (False, True) for ckpt in (False, True)]
    for case in cases:
        assert case["status"] == "ok", case
        # the flags reached the trainer: compiled student and teacher, checkpointed student, SDPA teacher
        assert case["student_compiled"] == case["teacher_compiled"] == case["torch_compile"]
        assert case["student_activation_checkpointing"] == case["activation_checkpointing"]
        assert case["teacher_attention"] == "sdpa"


def test_tiny_suite_times_add_up(tiny_run):
    report, _, _ = tiny_run
    batch, steps = report["settings"]["batch_size"], report["settings"]["steps"]
    for case in report["cases"]:
        assert len(case["clean_steps_s"]) == steps and min(case["clean_steps_s"]) > 0
        assert case["step_s"] == statistics.median(case["clean_steps_s"])
        assert case["samples_per_second"] == pytest.approx(batch / case["step_s"], rel=1e-12)
        parts = case["parts_s"]
        assert set(parts) == {"data", "teacher", "student", "loss", "optimizer", "other"}
        assert min(parts[p] for p in ("data", "teacher", "student", "loss", "optimizer")) > 0
        assert parts["other"] >= -1e-6  # the rest of the instrumented step, never more than it
        assert sum(parts.values()) == pytest.approx(case["instrumented_step_s"], rel=1e-9)
        assert sum(case["fractions"].values()) == pytest.approx(1.0, abs=1e-9)
        assert case["step_over_model_work"] == pytest.approx(
            case["step_s"] / (parts["teacher"] + parts["student"]), rel=1e-12)
        assert case["peak_memory_gib"] > 0 and case["warmup_s"] > 0 and case["build_s"] > 0


def test_tiny_suite_counts_flops_and_mfu(tiny_run):
    report, _, _ = tiny_run
    cases = {(c["student"], c["torch_compile"], c["activation_checkpointing"]): c for c in report["cases"]}
    for student in ("base", "small"):
        plain, recomputing = cases[student, False, False], cases[student, False, True]
        # The FLOP step covers the backward: activation checkpointing's recomputation adds to the count ...
        assert recomputing["flops_per_step"] > plain["flops_per_step"]
        # ... but MFU counts model FLOPs: the pair's count without checkpointing, for every case of the pair.
        for compiled in (False, True):
            for ckpt in (False, True):
                case = cases[student, compiled, ckpt]
                assert case["model_flops_per_step"] == plain["flops_per_step"]
                assert case["mfu"] == pytest.approx(case["model_flops_per_step"] / case["step_s"] / 2e12, rel=1e-12)
        assert cases[student, True, False]["flops_per_step"] is None  # not counted under compilation
    assert cases["base", False, False]["flops_per_step"] > cases["small", False, False]["flops_per_step"]
    # Lower bound: the encoders' linear layers alone (12 h^2 multiply-adds per token and layer; 17 tokens at 56 px).
    # Teacher (tiny large: h 64, 8 layers) forward on 2 global views + 4 patches; student (tiny base: h 48,
    # 4 layers) forward and backward (3x) on 2 views.
    linear = 2 * 12 * 17 * (64**2 * 8 * 6 + 3 * 48**2 * 4 * 2)
    assert cases["base", False, False]["flops_per_step"] > linear


def test_tiny_suite_markdown_table(tiny_run):
    report, markdown, stdout = tiny_run
    assert markdown.startswith("**CPU smoke run of tiny structures: not a measurement.**")
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| case |"))
    assert "teacher fwd" in header and "student fwd+bwd" in header and "MFU" in header
    rows = [line for line in lines if line.startswith("| large -> ")]
    assert [row.split(" | ")[0][2:] for row in rows] == [c["name"] for c in report["cases"]]
    assert all(row.count("|") == header.count("|") for row in rows)
    assert markdown in stdout  # printed as well
