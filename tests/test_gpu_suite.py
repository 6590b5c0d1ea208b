"""benchmarks/gpu_suite.py: the paper's recipe (two teachers 7:3, streamed shards) through the trainer, on CPU with
tiny stand-ins and two processes of accelerate launch: the GPU call must not fail on a typo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import gpu_report, gpu_suite, gpu_timer

ROOT = Path(__file__).resolve().parents[1]


def suite_function(name: str):
    return next(getattr(module, name) for module in (gpu_suite, gpu_timer, gpu_report) if hasattr(module, name))


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
        suite_function("parse_args")(["--processes", "0"])
    assert "--processes must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite_function("parse_args")(["--size", "500"])
    assert "--size must be a positive multiple of 14" in capsys.readouterr().err
    args = suite_function("parse_args")([])  # GPU defaults come from the recipe
    assert (args.dataloader_num_workers, args.project_steps, args.size, args.batch_size) == (8, 20000, 560, 8)


def test_plan_follows_the_trainers_draws():
    draws = suite_function("teacher_draws")(42, [0.7, 0.3], 40)
    assert set(draws) == {0, 1} and 0.5 < draws.count(0) / 40 < 0.9
    phases = suite_function("plan_phases")(draws, 2, 3, 4)
    spans = {p: [i for i, q in enumerate(phases) if q == p] for p in ("warmup", "count", "clean", "instrumented")}
    for phase, minimum in (("warmup", 3), ("count", 1), ("clean", 4)):
        steps = spans[phase]
        assert len(steps) >= minimum and steps == list(range(steps[0], steps[-1] + 1))  # contiguous
        assert {draws[i] for i in steps} == {0, 1}  # every teacher warmed up, counted and timed
    assert len(spans["instrumented"]) == 4 and spans["instrumented"][0] == spans["clean"][-1] + 1
    with pytest.raises(ValueError, match="not drawn"):
        suite_function("plan_phases")([0] * 10, 2, 1, 1)


def test_summary_arithmetic():
    """Expected step time over the sampling weights, images/s, FLOPs, host syncs and the 20k projection."""
    steps = [{"phase": "clean", "teacher": t, "step_s": s, "data_wait_s": w}
             for t, s, w in ((0, 1.0, 0.1), (1, 3.0, 0.2), (0, 1.2, 0.1), (0, 1.1, 0.0))]
    parts = {"data": 0.1, "teacher": 0.5, "student": 0.3, "loss": 0.1, "optimizer": 0.05, "other": 0.05}
    steps.append({"phase": "instrumented", "teacher": 0, "step_s": 1.2, "data_wait_s": 0.1, "parts_s": parts})
    counted = {0: {"flops": 10e12, "host_syncs": 40.0}, 1: {"flops": 30e12, "host_syncs": 60.0}}
    timer = SimpleNamespace(steps=steps, counted=counted, warmup_s=5.0)
    summary = suite_function("summarise")(timer, [0.7, 0.3], 8, 2, 20000)
    expected = 0.7 * 1.1 + 0.3 * 3.0  # medians per teacher
    assert summary["step_s_by_teacher"] == [1.1, 3.0]
    assert summary["expected_step_s"] == pytest.approx(expected, rel=1e-12)
    assert summary["images_per_second"] == pytest.approx(16 / expected, rel=1e-12)
    assert summary["flops_per_step"] == pytest.approx(0.7 * 10e12 + 0.3 * 30e12, rel=1e-12)
    assert summary["host_syncs_per_step"] == pytest.approx(0.7 * 40 + 0.3 * 60, rel=1e-12)
    assert summary["data_wait_share"] == pytest.approx(0.4 / 6.3, rel=1e-12)
    assert summary["projected_wall_s"] == pytest.approx(20000 * expected, rel=1e-12)
    assert sum(summary["fractions"].values()) == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("gpu_suite")
    command = [sys.executable, "-m", "benchmarks.gpu_suite", "--tiny", "--processes", "2", "--output_dir", str(output_dir),
               "--peak_tflops", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads((output_dir / "gpu_suite.json").read_text())
    return report, (output_dir / "gpu_suite.md").read_text(), result.stdout


@pytest.mark.slow
def test_tiny_suite_runs_the_recipe_on_two_processes(tiny_run):
    report, markdown, stdout = tiny_run
    assert report["tiny"] and report["device"] == "cpu" and report["peak_source"] == "--peak_tflops"
    assert "Dense bf16 peaks (TFLOP/s): H100 PCIe 756" in stdout and "accelerate.commands.launch" in stdout
    (case,) = report["cases"]
    assert case["status"] == "ok", case
    assert case["processes"] == 2 and len(case["peak_memory_gib_per_device"]) == 2
    assert min(case["peak_memory_gib_per_device"]) > 0
    # the recipe's two teachers, 7:3, both timed; the streamed shards were split one per rank
    assert case["teachers"] == ["depthanything-large", "genpercept-disparity"]
    assert case["teacher_weights"] == pytest.approx([0.7, 0.3]) and None not in case["step_s_by_teacher"]
    assert case["steps_per_second"] == pytest.approx(1 / case["expected_step_s"], rel=1e-12)
    assert case["images_per_second"] == pytest.approx(2 * 2 / case["expected_step_s"], rel=1e-12)
    assert case["projected_wall_s"] == pytest.approx(20000 * case["expected_step_s"], rel=1e-12)
    assert 0 <= case["data_wait_share"] < 1
    # FLOPs: GenPercept's forward (VAE + UNet) counted apart from the student's; MFU written out
    dpt, genpercept = case["counted_by_teacher"]
    assert 0 < dpt["teacher_flops"] < dpt["flops"] and 0 < genpercept["teacher_flops"] < genpercept["flops"]
    assert case["model_flops_per_step"] == pytest.approx(0.7 * dpt["flops"] + 0.3 * genpercept["flops"])
    assert case["mfu"] == pytest.approx(case["model_flops_per_step"] / case["expected_step_s"] / 2e12, rel=1e-12)
    # host syncs inside training_step, counted per teacher
    assert dpt["host_syncs"] >= 1 and genpercept["host_syncs"] >= 1
    assert case["host_syncs_per_step"] == pytest.approx(0.7 * dpt["host_syncs"] + 0.3 * genpercept["host_syncs"])
    assert markdown.startswith("**CPU smoke run of tiny stand-ins: not a measurement.**")
    header = next(line for line in markdown.splitlines() if line.startswith("| case | procs"))
    for column in ("steps/s", "images/s", "MFU", "peak GiB per device", "host syncs/step", "data wait", "20000 steps"):
        assert column in header
    assert "F = 0.7 x " in markdown and "MFU = F / t / peak" in markdown
    assert markdown in stdout
