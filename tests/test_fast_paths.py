"""The fast paths the GPU suite measures: --torch_compile through scripts/distill.py, SDPA teachers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import DepthAnythingForDepthEstimation

from conftest import tiny_argv
from hf_distill.models import IMAGENET_MEAN, IMAGENET_STD
from hf_distill.teachers import TEACHER_FAMILIES, TransformersDepthTeacher
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer

ROOT = Path(__file__).resolve().parents[1]


def distill_argv(assets, output_dir: Path, *extra: str) -> list[str]:
    # Patches (42) smaller than the global view (56): the teacher runs twice per step (batch 2 with tokens, batch 4
    # without), so a compiled teacher holds two graphs, and a hook added after compilation would be missing from one.
    return tiny_argv(assets, output_dir, "--num_iterations", "2", "--logging_steps", "1", "--save_strategy", "no",
                     "--visualize_steps", "0", *extra)


def logged_steps(output_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (output_dir / "train.log").read_text().splitlines() if line.startswith("{")]
    return [r for r in records if "loss_feat" in r]


@pytest.mark.slow  # compilation: about a minute on the 2-core machine
def test_torch_compile_trains_like_eager_through_distill_script(assets, tmp_path):
    """Two steps with --torch_compile (student wrapper, projector, both encoder-token taps and the teacher compiled)
    log the same per-term losses as without it. Backend aot_eager: dynamo's graph capture and AOTAutograd's
    backward graph (where hooks, taps and projectors can break) without inductor's C++ code generation, which takes
    minutes on CPU; the GPU suite compiles with inductor."""
    runs = {}
    for name, extra in (("eager", ()), ("compiled", ("--torch_compile", "--torch_compile_backend", "aot_eager"))):
        output_dir = tmp_path / name
        result = subprocess.run([sys.executable, str(ROOT / "scripts/distill.py"), *distill_argv(assets, output_dir),
                                 *extra], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = logged_steps(output_dir)
    assert [r["step"] for r in runs["compiled"]] == [1, 2]
    for eager, compiled in zip(runs["eager"], runs["compiled"], strict=True):
        assert compiled["loss_feat"] > 0  # the tapped tokens reached the loss through the projector
        for term in ("loss", "loss_sc", "loss_lg", "loss_feat", "loss_grad"):
            assert compiled[term] == pytest.approx(eager[term], rel=1e-4), term


def test_teachers_use_sdpa_attention(assets, tmp_path):
    trainer = build_trainer(*parse_distill_args(distill_argv(assets, tmp_path)))
    teacher = trainer.accelerator.unwrap_model(trainer.teachers[0]).model
    assert teacher.config.backbone_config._attn_implementation == "sdpa"
    assert teacher.backbone.config._attn_implementation == "sdpa"

    # A Depth Anything model handed over with eager attention is switched to SDPA, computing the same depth.
    eager = DepthAnythingForDepthEstimation.from_pretrained(assets["teacher_large"], attn_implementation="eager").eval()
    assert eager.backbone.config._attn_implementation == "eager"
    pixels = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        expected = eager(pixel_values=pixels).predicted_depth
    wrapped = TransformersDepthTeacher(eager, TEACHER_FAMILIES["depth_anything"], (IMAGENET_MEAN, IMAGENET_STD))
    assert wrapped.model.backbone.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(wrapped.model(pixel_values=pixels).predicted_depth, expected, rtol=1e-4, atol=1e-5)
