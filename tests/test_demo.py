"""The embedded demo: shipped assets, the end-to-end path at reduced size, and (slow) that the student learns."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from conftest import CARD_ROUNDING, load_file_module, run_python_snippets
from hf_distill.demo import (
    DEMO_STUDENT,
    DEMO_TEACHER,
    demo_student_config,
    demo_teacher_config,
    format_report,
    run_demo,
)


def demo_teacher_model() -> DepthAnythingForDepthEstimation:
    return DepthAnythingForDepthEstimation.from_pretrained(DEMO_TEACHER)


def structure(config: DepthAnythingConfig) -> tuple:
    backbone = config.backbone_config
    return (backbone.hidden_size, backbone.num_attention_heads, backbone.num_hidden_layers,
            list(backbone.out_indices), list(config.neck_hidden_sizes), config.fusion_hidden_size,
            config.head_hidden_size)


def test_shipped_demo_models_have_the_declared_structures():
    teacher, info = DepthAnythingForDepthEstimation.from_pretrained(DEMO_TEACHER, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert structure(teacher.config) == structure(demo_teacher_config()) == (96, 4, 4, [1, 2, 3, 4],
                                                                           [24, 48, 96, 96], 48, 16)
    assert structure(DepthAnythingConfig.from_pretrained(DEMO_STUDENT)) == structure(demo_student_config())
    assert not (DEMO_STUDENT / "model.safetensors").exists()  # the demo student starts from random weights
    metrics = json.loads((DEMO_TEACHER / "demo_teacher_metrics.json").read_text())
    assert metrics["abs_rel"] < 0.2 and metrics["delta1"] > 0.7


def test_demo_end_to_end_at_reduced_size(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(["--output_dir", str(out), "--num_generated_scenes", "8", "--max_steps", "2",
                       "--save_steps", "2", "--visualize_steps", "2"], num_eval_scenes=3)
    assert set(report) == {"teacher", "student_before", "student_after"}
    assert json.loads((out / "demo_report.json").read_text()) == report
    for metrics in report.values():
        assert 0 < metrics["abs_rel"] < 10 and 0 <= metrics["delta1"] <= 1
    # size and speed: the teacher's and the saved student's (the same network before and after training)
    teacher_profile, student_profile = report["teacher"]["profile"], report["student_after"]["profile"]
    assert report["student_before"]["profile"] == student_profile
    assert teacher_profile["parameters"] == sum(p.numel() for p in demo_teacher_model().parameters())
    assert student_profile["parameters"] == sum(
        p.numel() for p in DepthAnythingForDepthEstimation(demo_student_config()).parameters())
    assert student_profile["input_size"] == teacher_profile["input_size"] == [112, 112]
    assert 0 < student_profile["gflops"] < teacher_profile["gflops"]
    assert 0 < student_profile["latency_ms"]["median"] <= student_profile["latency_ms"]["p90"]
    table = format_report(report).splitlines()
    assert [line.split(" | ")[0] for line in table[-3:]] == ["| teacher", "| student_before", "| student_after"]
    assert "(×0.29)" in table[-1]  # 0.36M / 1.23M parameters
    model, info = DepthAnythingForDepthEstimation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (out / "student_final.safetensors").is_file() and (out / "visualizations" / "step_0000002.png").is_file()
    card = ModelCard.load(out / "README.md")
    results = card.data.eval_results
    assert any(r.dataset_name == "generated-scenes-heldout" and r.metric_type == "abs_rel" and
               r.metric_value == pytest.approx(report["student_after"]["abs_rel"], rel=0, abs=CARD_ROUNDING)
               for r in results)
    assert "## Size and speed" in card.text and "| **demo** (this model) | 112x112 | 0.36M (×0.29) |" in card.text


@pytest.mark.slow
def test_demo_student_learns_from_the_teacher(tmp_path):
    """The full demo recipe: the student ends far better than it started and close to its teacher."""
    report = run_demo(["--output_dir", str(tmp_path / "demo")])
    before, after, teacher = (report[k]["abs_rel"] for k in ("student_before", "student_after", "teacher"))
    assert after <= 0.7 * before, report
    assert after <= 1.3 * teacher, report
    assert report["student_after"]["delta1"] > report["student_before"]["delta1"] + 0.15, report


def test_demo_teacher_card_is_current_and_its_snippets_run(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    script = load_file_module(Path(__file__).resolve().parents[1] / "scripts" / "make_demo_teacher.py",
                              "make_demo_teacher")
    shutil.copy(DEMO_TEACHER / "demo_teacher_metrics.json", tmp_path)
    assert script.main(["--card_only", "--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == (DEMO_TEACHER / "README.md").read_text()  # regenerated by code

    card = ModelCard.load(DEMO_TEACHER / "README.md")
    assert card.data.license == "apache-2.0" and card.data.datasets is None  # generated scenes: no Hub dataset
    assert "trained **with ground truth**, not distilled" in card.text
    assert run_python_snippets(card.text, tmp_path, monkeypatch) == 2
