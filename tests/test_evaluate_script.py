"""scripts/evaluate.py end to end on a tiny saved model and generated benchmark fixtures."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
from huggingface_hub import ModelCard
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

from conftest import CARD_ROUNDING, load_file_module
from hf_distill.evaluation import (
    BENCHMARKS,
    METRIC_NAMES,
    evaluate_model,
    load_benchmark,
    load_model_and_processor,
    predict_depth,
)
from hf_distill.evaluation_run import benchmark_roots
from hf_distill.models import default_image_processor, tiny_depth_config
from hf_distill.testing import write_eval_benchmark

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "evaluate.py"


def _load_script():
    return load_file_module(SCRIPT, "evaluate_script")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    model = DepthAnythingForDepthEstimation(tiny_depth_config())
    model.save_pretrained(root / "model")
    default_image_processor().save_pretrained(root / "model")
    splits = {name: write_eval_benchmark(name, root / name, 2, seed=3) for name in ("nyu", "scannet")}
    return root, splits


def _index(card: ModelCard) -> dict:
    return {(e.dataset_type, e.metric_type): e.metric_value for e in card.data.eval_results}


def test_evaluate_json_csv_and_card_updated_twice(setup):
    root, splits = setup
    model_dir = root / "model"
    common = ["--model", str(model_dir), "--processing_res", "56", "--update_card"]

    result = _run(*common, "--benchmark", "nyu", "--data_dir", str(root / "nyu"), "--split_file", str(splits["nyu"]),
                  "--batch_size", "2", "--output_json", str(root / "out" / "nyu.json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((root / "out" / "nyu.json").read_text())
    assert set(summary) == {*METRIC_NAMES, "num_samples"} and summary["num_samples"] == 2
    assert "abs_rel" in result.stdout and "nyu" in result.stdout  # summary table
    with open(root / "out" / "nyu_nyu_samples.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [line.split()[0] for line in splits["nyu"].read_text().splitlines()]
    # The script reports the library's numbers (up to float32 run-to-run noise in another process).
    model, processor = load_model_and_processor(str(model_dir))
    spec = BENCHMARKS["nyu"]
    expected, _ = evaluate_model(model, processor, load_benchmark("nyu", root / "nyu", splits["nyu"]),
                                 min_depth=spec.min_depth, max_depth=spec.max_depth, processing_res=56)
    assert summary == pytest.approx(expected, rel=1e-4)

    card = ModelCard.load(model_dir / "README.md")
    assert _index(card)[("nyu_depth_v2", "abs_rel")] == pytest.approx(summary["abs_rel"], rel=0, abs=CARD_ROUNDING)
    card.text += "\n## Notes\n\nKept across updates.\n"
    card.save(model_dir / "README.md")

    # Second update: two benchmarks, one root and one list each -> one object per benchmark.
    result = _run(*common, "--benchmark", "nyu,scannet", "--data_dir", f"{root / 'nyu'},{root / 'scannet'}",
                  "--split_file", f"{splits['nyu']},{splits['scannet']}", "--max_samples", "1",
                  "--output_json", str(root / "out" / "both.json"), "--output_dir", str(root / "csv"))
    assert result.returncode == 0, result.stderr
    results = json.loads((root / "out" / "both.json").read_text())
    assert set(results) == {"nyu", "scannet"}
    assert all(set(r) == {*METRIC_NAMES, "num_samples"} and r["num_samples"] == 1 for r in results.values())
    assert (root / "csv" / "both_scannet_samples.csv").is_file()

    card = ModelCard.load(model_dir / "README.md")
    assert "Kept across updates." in card.text
    assert card.data.pipeline_tag == "depth-estimation"
    index = _index(card)
    assert len(card.data.eval_results) == len(index) == 2 * len(METRIC_NAMES)  # nyu replaced, scannet added
    assert index[("nyu_depth_v2", "abs_rel")] == pytest.approx(results["nyu"]["abs_rel"], rel=0, abs=CARD_ROUNDING)
    assert index[("scannet", "delta1")] == pytest.approx(results["scannet"]["delta1"], rel=0, abs=CARD_ROUNDING)


def test_errors_are_one_line_and_nonzero(setup, tmp_path, capsys):
    root, _ = setup
    script = _load_script()
    # The shipped list names real NYU files, absent from the fixture root.
    assert script.main(["--model", str(root / "model"), "--benchmark", "nyu", "--data_dir", str(root / "nyu")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test/kitchen_0004/rgb_0001.png not found (listed on line 1 of" in err[0]
    assert script.main(["--model", "x", "--benchmark", "nyu,middlebury", "--data_dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --benchmark: unknown ['middlebury']; choose from nyu, kitti, eth3d, scannet, diode, folder"]
    assert script.main(["--model", "x", "--benchmark", "nyu", "--data_dir", "a,b"]) == 1
    assert "--data_dir lists 2 roots" in capsys.readouterr().err
    assert script.main(["--model", "x", "--benchmark", "nyu", "--data_dir", "a", "--update_card"]) == 1
    assert "--update_card needs --model to be a local model folder" in capsys.readouterr().err


def test_data_dir_parent_folder(tmp_path):
    (tmp_path / "kitti.tar").write_bytes(b"")
    assert benchmark_roots(["nyu", "kitti"], str(tmp_path)) == {
        "nyu": tmp_path / "nyu", "kitti": tmp_path / "kitti.tar"}


def test_predict_depth_resizes_each_image_and_batching_does_not_change_results(setup):
    root, _ = setup
    model, processor = load_model_and_processor(str(root / "model"))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in
              [(30, 40, 3), (20, 50, 3), (30, 40, 3)]]
    together = predict_depth(model, processor, images, processing_res=56)
    assert [p.shape for p in together] == [(30, 40), (20, 50), (30, 40)]
    alone = [predict_depth(model, processor, [image], processing_res=56)[0] for image in images]
    # A randomly initialised model predicts tiny values (~1e-8): compare relative to their scale.
    for a, b in zip(together, alone):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    finer = predict_depth(model, processor, images[:1], processing_res=112)[0]
    assert np.abs(finer - alone[0]).max() > 1e-2 * np.abs(alone[0]).max()
    with pytest.raises(ValueError, match="processing_res"):
        predict_depth(model, processor, images[:1], processing_res=0)


def test_samples_without_valid_pixels_are_left_out_of_the_summary(setup):
    root, splits = setup
    model, processor = load_model_and_processor(str(root / "model"))
    samples = list(load_benchmark("nyu", root / "nyu", splits["nyu"]))
    samples[1].valid[:] = False
    summary, rows = evaluate_model(model, processor, samples, min_depth=1e-3, max_depth=10.0, batch_size=2,
                                   processing_res=56)
    assert len(rows) == 2 and np.isnan(rows[1]["abs_rel"])
    assert summary["num_samples"] == 1 and summary["abs_rel"] == rows[0]["abs_rel"]


def test_compare_teacher_student_and_its_onnx_export(setup, tmp_path):
    """--model A,B,C: one table with size and speed next to accuracy, ratios against A, JSON + Markdown + PNG, and
    the student's card gains its size-and-speed table; the ONNX row runs with onnxruntime."""
    import warnings

    root, splits = setup
    teacher = root / "model"
    student_dir = tmp_path / "student"
    student = DepthAnythingForDepthEstimation(tiny_depth_config(
        hidden_size=16, num_attention_heads=2, neck_hidden_sizes=[4, 8, 16, 16], fusion_hidden_size=8)).eval()
    student.save_pretrained(student_dir)
    default_image_processor().save_pretrained(student_dir)
    onnx_file = student_dir / "onnx" / "model.onnx"
    onnx_file.parent.mkdir()
    # The fixture's 640x480 images become 70x56 inputs at --processing_res 56: export at that size.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, (torch.randn(1, 3, 56, 70),), str(onnx_file), input_names=["pixel_values"],
                          output_names=["predicted_depth"], dynamic_axes={"pixel_values": {0: "batch"}},
                          dynamo=False)
    models = [str(teacher), str(student_dir), str(onnx_file)]
    out = tmp_path / "out" / "compare.json"
    assert _load_script().main([
        "--model", ",".join(models), "--benchmark", "nyu", "--data_dir", str(root / "nyu"),
        "--split_file", str(splits["nyu"]), "--processing_res", "56", "--profile_batch_size", "2",
        "--profile_repeats", "3", "--profile_threads", "1", "--output_json", str(out), "--update_card"]) == 0

    result = json.loads(out.read_text())
    assert result["reference"] == str(teacher) and list(result["models"]) == models
    rows = result["models"]
    sizes = [sum(p.numel() for p in m.parameters()) for m in (load_model_and_processor(str(teacher))[0], student)]
    assert [rows[m]["parameters"] for m in models[:2]] == sizes
    assert 0 < rows[str(onnx_file)]["parameters"] <= sizes[1]  # the graph's weights (unused ones are left out)
    assert rows[str(student_dir)]["ratios"]["parameters"] == pytest.approx(sizes[1] / sizes[0])
    for name, row in rows.items():
        assert set(row) >= {"parameters", "gflops", "latency_ms", "throughput", "peak_memory_mb", "metrics", "ratios",
                            "device", "input_size", "settings"}
        assert 0 < row["latency_ms"]["median"] <= row["latency_ms"]["p90"] and row["throughput"] > 0
        assert set(row["metrics"]["nyu"]) == {*METRIC_NAMES, "num_samples"}
        assert row["ratios"]["latency_ms"] == pytest.approx(
            row["latency_ms"]["median"] / rows[str(teacher)]["latency_ms"]["median"])
    assert rows[str(teacher)]["ratios"]["parameters"] == 1.0 and rows[str(teacher)]["ratios"]["nyu"]["abs_rel"] == 1.0
    assert rows[str(onnx_file)]["backend"] == "onnxruntime" and rows[str(onnx_file)]["gflops"] is None
    # PyTorch at --processing_res squared; the ONNX graph at its fixed size
    assert [rows[m]["input_size"] for m in models] == [[56, 56], [56, 56], [56, 70]]
    assert rows[str(student_dir)]["gflops"] < rows[str(teacher)]["gflops"]
    # onnxruntime and PyTorch eager evaluate the same network to the same metrics
    assert rows[str(onnx_file)]["metrics"]["nyu"] == pytest.approx(rows[str(student_dir)]["metrics"]["nyu"], rel=1e-3)

    assert out.with_name("compare_accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text().splitlines()
    assert "**nyu**" in table
    body = [line for line in table if line.startswith("| ") and not line.startswith(("| model | input", "| ---"))]
    assert [line.split(" | ")[0] for line in body] == ["| model", "| student", "| student/onnx (onnxruntime)"]
    assert "(×" not in body[0] and "(×" in body[1]
    card = (student_dir / "README.md").read_text()
    assert "## Size and speed" in card and "**student** (this model)" in card and "cpu (1 thread)" in card
    assert all(row["device"] == "cpu (1 thread)" for row in rows.values())
    assert ModelCard.load(student_dir / "README.md").data.eval_results  # its accuracy too


def test_compare_errors(setup, capsys):
    root, _ = setup
    script = _load_script()
    model = str(root / "model")
    assert script.main(["--model", f"{model},{model}", "--benchmark", "nyu", "--data_dir", str(root / "nyu")]) == 1
    assert "--model: a comparison needs distinct models" in capsys.readouterr().err
    assert script.main(["--model", f"{model},depthanything-small", "--benchmark", "nyu", "--data_dir", "x",
                        "--update_card"]) == 1
    assert "--update_card needs a local model folder after the first --model" in capsys.readouterr().err
