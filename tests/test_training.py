"""DistillationTrainer, its arguments and scripts/distill.py on tiny models and generated images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import DepthAnythingForDepthEstimation, pipeline

from conftest import accelerate_launch, run_python_snippets, tiny_argv
from hf_distill.data import collate_views
from hf_distill.demo import DEMO_TEACHER
from hf_distill.evaluation import METRIC_NAMES
from hf_distill.losses import (
    feature_alignment_loss,
    gradient_matching_loss,
    local_global_loss,
    normalized_l1,
)
from hf_distill.models import tiny_depth_config
from hf_distill.testing import write_eval_benchmark, write_nyu_csv_layout
from hf_distill.token_tap import EncoderTokenTap
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer, run_distillation


ROOT = Path(__file__).resolve().parents[1]


def first_batch(trainer) -> dict[str, torch.Tensor]:
    return collate_views([trainer.train_dataset[i] for i in range(2)])


# ---- arguments -------------------------------------------------------------------------------------------


def test_seed_flags_map_onto_hf_fields(tmp_path):
    model_args, data_args, args = parse_distill_args([
        "--batch_size", "8", "--lr", "1e-4", "--num_iterations", "20", "--num_epochs", "30",
        "--checkpoint_interval", "5", "--use_nyu_dataset", "--warmup_epochs", "2", "--weight_decay", "1e-5",
        "--num_segments", "8", "--min_local_crop", "96", "--teacher_models", "a", "b",
        "--teacher_checkpoints", "a.pth", "b.safetensors", "--student_arch", "depthanything-small",
        "--dataset_dir", "data/nyu", "--normalization", "local", "--lambda_lg", "0.3", "--lambda_feat", "0.7",
        "--lambda_grad", "0.2", "--global_crop_size", "392", "--local_crop_size", "280",
        "--output_dir", str(tmp_path),
    ])
    assert args.per_device_train_batch_size == 8 and args.learning_rate == 1e-4
    assert args.max_steps == 20 and args.num_train_epochs == 30 and args.save_steps == 5
    assert data_args.dataset_format == "nyu" and args.warmup_epochs == 2 and args.weight_decay == 1e-5
    assert args.hdn_levels == 4  # 8 segments at the finest level: levels of 1, 2, 4, 8
    assert data_args.min_local_crop == 96 and data_args.global_crop_size == 392 and data_args.local_crop_size == 280
    assert model_args.teacher_models == ["a", "b"] and model_args.teacher_checkpoints == ["a.pth", "b.safetensors"]
    assert model_args.student_arch == "depthanything-small" and data_args.dataset_dir == "data/nyu"
    assert (args.normalization, args.lambda_lg, args.lambda_feat, args.lambda_grad) == ("local", 0.3, 0.7, 0.2)


def test_config_file_values_are_overridden_by_flags(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("batch_size: 4\nlambda_grad: 0.5\nnum_segments: 4\noutput_dir: %s\n" % tmp_path)
    _, _, args = parse_distill_args(["--config", str(config), "--lambda_grad", "0.25"])
    assert args.per_device_train_batch_size == 4 and args.lambda_grad == 0.25 and args.hdn_levels == 3


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--normalization", "median"], "--normalization"),
        (["--teacher_models", "a", "b", "--normalization", "none"], "--normalization none"),
        (["--global_crop_size", "500"], "--global_crop_size"),
        (["--local_crop_size", "100"], "--local_crop_size"),
        (["--teacher_models", "a", "b", "--teacher_checkpoints", "x"], "--teacher_checkpoints"),
        (["--teacher_models", "a", "b", "--teacher_sampling_weights", "1"], "--teacher_sampling_weights"),
        (["--num_segments", "3"], "--num_segments"),
        (["--lambda_sc", "-1"], "--lambda_sc"),
    ],
)
def test_invalid_combinations_name_the_flag(argv, flag, tmp_path):
    with pytest.raises(ValueError, match=flag):
        parse_distill_args([*argv, "--output_dir", str(tmp_path)])


def test_distill_script_reports_bad_arguments_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/distill.py"), "--global_crop_size", "500", "--output_dir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("distill.py: error: --global_crop_size")
    assert "Traceback" not in result.stderr


# ---- the loss of one step ----------------------------------------------------------------------------------


def test_compute_loss_is_the_weighted_sum_of_the_terms(assets, tmp_path):
    trainer = build_trainer(*parse_distill_args(tiny_argv(
        assets, tmp_path, "--lambda_sc", "1.0", "--lambda_lg", "0.5", "--lambda_feat", "0.7", "--lambda_grad", "2.0",
        "--lambda_hdn", "0.8", "--normalization", "global")))
    batch = first_batch(trainer)
    total = trainer.compute_loss(trainer.model, batch)

    teacher = DepthAnythingForDepthEstimation.from_pretrained(assets["teacher_large"]).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad(), EncoderTokenTap(teacher) as tap:
        teacher_global = teacher(pixel_values=(batch["global_view"] - mean) / std).predicted_depth
    teacher_tokens = tap.tokens
    with torch.no_grad():
        patches = batch["local_views"].flatten(0, 1)
        teacher_patches = teacher(pixel_values=(patches - mean) / std).predicted_depth.unflatten(0, (2, 2))
    module = trainer.model
    with EncoderTokenTap(module.student) as tap:
        student_global = module.student(pixel_values=(batch["global_view"] - mean) / std).predicted_depth
    student_tokens = module.projectors[0](tap.tokens)

    expected = (
        1.0 * normalized_l1(student_global, teacher_global, normalization="global")
        + 0.5 * local_global_loss(student_global, teacher_patches, batch["global_boxes"], normalization="global")
        + 0.7 * feature_alignment_loss(student_tokens, teacher_tokens, None, margin=0.85)
        + 2.0 * gradient_matching_loss(student_global, teacher_global)
        + 0.8 * normalized_l1(student_global, teacher_global, normalization="hybrid", hdn_variant="dr",
                                  hdn_levels=3)
    )
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(assets, tmp_path):
    # The shipped demo teacher gives depth-like targets (a random teacher's output is unlearnable texture).
    trainer = build_trainer(*parse_distill_args(tiny_argv(
        assets, tmp_path, "--teacher_models", str(DEMO_TEACHER), "--global_crop_size", "84",
        "--local_crop_size", "84")))
    batch = first_batch(trainer)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = trainer.compute_loss(trainer.model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_teacher_draws_follow_the_sampling_weights(assets, tmp_path):
    trainer = build_trainer(*parse_distill_args(tiny_argv(
        assets, tmp_path, "--teacher_models", str(assets["teacher_large"]), str(assets["teacher_base"]),
        "--teacher_sampling_weights", "7", "3")))
    draws = []
    for step in range(2000):
        trainer.state.global_step = step
        draws.append(trainer.draw_teacher())
    assert abs(sum(d == 0 for d in draws) / len(draws) - 0.7) < 0.04
    trainer.state.global_step = 17
    assert trainer.draw_teacher() == draws[17]  # reproducible per step (resume, all ranks)


def test_bf16_autocast_on_cpu_runs(assets, tmp_path):
    trainer = run_distillation(*parse_distill_args(tiny_argv(assets, tmp_path, "--bf16", "--num_iterations", "2")))
    assert trainer.state.global_step == 2
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))


# ---- outputs and resume -----------------------------------------------------------------------------------


def test_output_dir_holds_only_the_student_and_loads_with_pipeline(assets, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_distillation(*parse_distill_args(tiny_argv(assets, out)))
    student_keys = set(DepthAnythingForDepthEstimation(tiny_depth_config("small")).state_dict())

    for flat in ("student_checkpoint_2.safetensors", "student_checkpoint_4.safetensors", "student_final.safetensors"):
        assert set(load_file(out / flat)) == student_keys, flat
    model, info = DepthAnythingForDepthEstimation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(model.state_dict(), load_file(out / "student_final.safetensors"))
    assert (out / "checkpoint-4" / "projectors.safetensors").is_file()
    assert not any("projector" in name for name in (out / "model.safetensors").read_bytes()[:20000].decode(
        "latin-1").split('"'))

    depth = pipeline("depth-estimation", model=str(out), device="cpu")(str(next(assets["data"].rglob("*.jpg"))))
    assert depth["predicted_depth"].ndim == 2
    card = (out / "README.md").read_text()
    assert "pipeline_tag: depth-estimation" in card and "teacher_large" in card
    assert str(tmp_path) not in card and 'pipeline("depth-estimation", model="run")' in card  # the folder's name
    assert run_python_snippets(card, tmp_path, monkeypatch) == 2  # every usage snippet works next to the folder
    assert sorted(p.name for p in (out / "visualizations").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    logged = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
    assert {"loss_sc", "loss_lg", "loss_feat", "loss_grad", "samples_per_second"} <= set(logged[0])


def test_evaluation_on_nyu_ground_truth_tracks_the_best_student(assets, tmp_path):
    # The DenseDepth test split is NYUv2's 480x640 frames, scored with its protocol (Eigen crop, 1e-3 < d < 10).
    nyu = write_nyu_csv_layout(tmp_path / "nyu", num_train=4, num_test=3, size=(480, 640), seed=5)
    out = tmp_path / "run"
    trainer = run_distillation(*parse_distill_args(tiny_argv(
        assets, out, "--dataset_dir", str(nyu), "--use_nyu_dataset", "--eval_strategy", "steps",
        "--eval_steps", "2", "--per_device_eval_batch_size", "2")))
    evaluations = [log for log in trainer.state.log_history if "eval_abs_rel" in log]
    assert [log["step"] for log in evaluations] == [2, 4]
    for log in evaluations:
        assert log["eval_num_samples"] == 3
        assert 0 < log["eval_abs_rel"] < 10 and 0 <= log["eval_delta1"] <= 1
    assert trainer.state.best_metric == min(log["eval_abs_rel"] for log in evaluations)  # metric_for_best_model
    best = min(evaluations, key=lambda log: log["eval_abs_rel"])
    assert (out / "student_best.safetensors").is_file()
    # student_best holds the weights of the best evaluated step, exported at the same time as its checkpoint
    torch.testing.assert_close(load_file(out / "student_best.safetensors"),
                               load_file(out / f"student_checkpoint_{best['step']}.safetensors"))


def test_training_time_evaluation_is_the_published_protocol(assets, tmp_path):
    """trainer.evaluate() and scripts/evaluate.py score the same student on the same NYUv2 fixture identically:
    whole images, prediction resized to the ground truth, Eigen crop, depth range, disparity alignment."""
    split = write_eval_benchmark("nyu", tmp_path / "nyu", 3, seed=3)
    out = tmp_path / "run"
    trainer = run_distillation(*parse_distill_args(tiny_argv(
        assets, out, "--num_iterations", "2", "--eval_benchmark", "nyu", "--eval_dataset_dir", str(tmp_path / "nyu"),
        "--eval_split_file", str(split), "--per_device_eval_batch_size", "2")))
    metrics = trainer.evaluate()
    assert metrics["eval_num_samples"] == 3 and "eval_runtime" in metrics
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/evaluate.py"), "--model", str(out), "--benchmark", "nyu", "--data_dir",
         str(tmp_path / "nyu"), "--split_file", str(split), "--batch_size", "2", "--output_json", str(tmp_path / "e.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    published = json.loads((tmp_path / "e.json").read_text())
    for name in METRIC_NAMES:
        assert metrics[f"eval_{name}"] == pytest.approx(published[name], rel=1e-6, abs=1e-9), name
    # predict() returns the maps the metrics were computed on: each prediction at its ground truth's size.
    output = trainer.predict(trainer.eval_dataset)
    assert output.predictions.shape == output.label_ids.shape == (3, 480, 640)
    assert output.metrics["test_abs_rel"] == pytest.approx(metrics["eval_abs_rel"], rel=1e-12)
    assert (output.label_ids[:, :45] == 0).all()  # outside the Eigen crop: no ground truth


# ---- distributed -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["one_teacher_evaluated", "two_teachers_activation_checkpointing",
                                     "streamed_shards"])
def test_two_process_ddp_run_completes(assets, tmp_path, variant):
    extra = {
        # 3 evaluation images over 2 ranks: the uneven last batch is gathered without duplicates
        "one_teacher_evaluated": [
            "--eval_benchmark", "nyu", "--eval_dataset_dir", str(tmp_path / "nyu"), "--eval_split_file",
            str(tmp_path / "nyu" / "nyu_depth_labeled_filename_list_test.txt"), "--eval_strategy", "steps",
            "--eval_steps", "3", "--per_device_eval_batch_size", "2"],
        "two_teachers_activation_checkpointing": [
            "--teacher_models", str(assets["teacher_large"]), str(assets["teacher_base"]), "--activation_checkpointing"],
        # each rank streams its own shard (the trainer keeps accelerate from dispatching or re-sharding)
        "streamed_shards": ["--dataset_dir", str(assets["shards"]), "--dataset_format", "webdataset"],
    }[variant]
    if variant == "one_teacher_evaluated":
        write_eval_benchmark("nyu", tmp_path / "nyu", 3, seed=3)
    out = tmp_path / "ddp"
    # `accelerate launch --cpu` always starts a single process; the multi-process launcher (torchrun) with the
    # trainer's --use_cpu gives real DDP over gloo.
    command = accelerate_launch(str(ROOT / "scripts/distill.py"),
                                *tiny_argv(assets, out, "--num_iterations", "3", *extra))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    messages = "\n".join(line for line in result.stderr.splitlines() if "it/s]" not in line)  # no progress bars
    assert result.returncode == 0, messages[-6000:]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    if variant == "one_teacher_evaluated":
        [evaluation] = [log for log in state["log_history"] if "eval_abs_rel" in log]
        published = subprocess.run(
            [sys.executable, str(ROOT / "scripts/evaluate.py"), "--model", str(out), "--benchmark", "nyu",
             "--data_dir", str(tmp_path / "nyu"), "--split_file", extra[5], "--output_json", str(tmp_path / "e.json")],
            capture_output=True, text=True, timeout=300)
        assert published.returncode == 0, published.stderr
        assert evaluation["eval_num_samples"] == 3  # the padded duplicate of the uneven last batch is dropped
        # the final student's numbers; other batch compositions change float32 rounding only
        assert evaluation["eval_abs_rel"] == pytest.approx(json.loads((tmp_path / "e.json").read_text())["abs_rel"],
                                                           rel=1e-5)
    assert (out / "student_final.safetensors").is_file()
    assert "| `world_size` | `2` |" in (out / "README.md").read_text()
