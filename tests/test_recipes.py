"""The shipped recipes as a user runs them: by name through scripts/distill.py, the demo under 2-process DDP, and the
DeepSpeed launch configs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env
from transformers import DepthAnythingForDepthEstimation

from conftest import accelerate_launch, load_file_module
from hf_distill.testing import write_nyu_csv_layout
from hf_distill.training.cli import RECIPES_DIR, parse_distill_args, shipped_recipes
from hf_distill.training.engines import deepspeed_teacher_config

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = ["--max_steps", "2", "--save_steps", "2", "--logging_steps", "1", "--visualize_steps", "2",
             "--per_device_train_batch_size", "2", "--global_crop_size", "56", "--local_crop_size", "42",
             "--min_region", "80", "--min_local_crop", "24", "--dataloader_num_workers", "0", "--bf16", "false",
             "--use_cpu", "--report_to", "none"]


def _distill_main():
    return load_file_module(ROOT / "scripts" / "distill.py", "distill_script").main


def test_the_shipped_recipes_are_package_data_resolvable_by_name():
    assert shipped_recipes() == ["demo", "nyu", "sa1b_multiteacher"]
    assert RECIPES_DIR.parent.name == "hf_distill"  # inside the package: installed with it
    model_args, data_args, args = parse_distill_args(["--config", "demo"])
    assert model_args.teacher_models == ["demo-teacher"] and model_args.student_arch == "demo-student"
    assert data_args.dataset_format == "generated" and data_args.dataset_dir is None
    assert args.output_dir == "output/demo" and args.max_steps == 400
    # a path works as well as a name, and flags still override the file
    _, _, by_path = parse_distill_args(["--config", str(RECIPES_DIR / "demo.yaml"), "--max_steps", "7"])
    assert by_path.max_steps == 7
    with pytest.raises(FileNotFoundError, match="shipped: demo, nyu, sa1b_multiteacher"):
        parse_distill_args(["--config", "no_such_recipe"])


@pytest.mark.parametrize("recipe", ["demo", "nyu", "sa1b_multiteacher"])
def test_every_shipped_recipe_runs_two_steps_with_tiny_stand_ins(recipe, assets, tmp_path):
    """The real parser reads the recipe; only the teachers, student, data and sizes are overridden by flags."""
    written = yaml.safe_load((RECIPES_DIR / f"{recipe}.yaml").read_text())
    teachers = [str(assets["teacher_large"]), str(assets["teacher_base"])][: len(written["teacher_models"])]
    data = {
        "demo": ["--num_generated_scenes", "4", "--generated_scene_size", "96", "128"],
        "nyu": ["--dataset_dir", str(write_nyu_csv_layout(tmp_path / "nyu", 4, 2, seed=1))],  # 480x640: the NYU protocol
        "sa1b_multiteacher": ["--dataset_dir", str(assets["shards"])],
    }[recipe]
    out = tmp_path / "out"
    argv = ["--config", recipe, "--teacher_models", *teachers, "--student_arch", str(assets["student"]),
            "--student_init", "random", "--output_dir", str(out), *data, *SMALL_RUN]
    model_args, data_args, args = parse_distill_args(argv)
    # what the recipe says and the flags do not override is what runs
    for key in ("normalization", "lambda_sc", "lambda_lg", "lambda_feat", "lambda_grad", "lambda_hdn", "learning_rate"):
        if key in written:
            assert getattr(args, key) == written[key], key
    assert data_args.dataset_format == written["dataset_format"]

    assert _distill_main()(argv) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    model, info = DepthAnythingForDepthEstimation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_demo_runs_under_two_process_ddp_and_reports_once(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 scripts/distill.py --demo ...`: every rank trains (gloo on
    CPU), the main process alone evaluates and writes the report."""
    out = tmp_path / "demo"
    command = accelerate_launch(str(ROOT / "scripts" / "distill.py"), "--demo", "--output_dir", str(out),
                                "--num_generated_scenes", "8", "--max_steps", "2", "--save_steps", "2",
                                "--logging_steps", "1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    messages = "\n".join(line for line in result.stderr.splitlines() if "it/s]" not in line)
    assert result.returncode == 0, messages[-6000:]
    report = json.loads((out / "demo_report.json").read_text())
    assert set(report) == {"teacher", "student_before", "student_after"}
    assert result.stdout.count("| student_after |") == 1  # one table, printed by the main process only
    assert "| `world_size` | `2` |" in (out / "README.md").read_text()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


# ---- DeepSpeed: the launch configs defer to the Trainer's flags (tested without DeepSpeed installed) -------------


def _deepspeed_plugin_config(config_file: Path, monkeypatch) -> dict:
    """The DeepSpeed config accelerate builds for a script launched with ``config_file``."""
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "scripts/distill.py"])
    args, defaults, _ = _validate_launch_command(args)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    return DeepSpeedPlugin().deepspeed_config


@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_configs_leave_accumulation_and_clipping_to_the_trainer(name, monkeypatch, tmp_path):
    config = _deepspeed_plugin_config(ROOT / "configs" / "accelerate" / name, monkeypatch)
    # "auto" is filled from --gradient_accumulation_steps / --max_grad_norm by transformers; a number that differs
    # from the flag raises its mismatch error.
    assert config["gradient_accumulation_steps"] == "auto" and config["gradient_clipping"] == "auto"

    # The same check fails on a config with fixed numbers (what the shipped ZeRO-2 file used to say).
    fixed = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    fixed["deepspeed_config"].update(gradient_accumulation_steps=1, gradient_clipping=1.0)
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(fixed))
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    pinned = _deepspeed_plugin_config(tmp_path / "fixed.yaml", monkeypatch)
    assert (pinned["gradient_accumulation_steps"], pinned["gradient_clipping"]) == (1, 1.0)


def test_zero3_teacher_buckets_come_from_the_teacher_hidden_size(monkeypatch):
    training = _deepspeed_plugin_config(ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml", monkeypatch)
    training["optimizer"] = {"type": "AdamW"}
    training["zero_optimization"].update(reduce_bucket_size="auto", stage3_prefetch_bucket_size="auto",
                                         stage3_param_persistence_threshold=1234)
    teacher = deepspeed_teacher_config(training, hidden_size=1024)
    zero = teacher["zero_optimization"]
    assert zero["stage"] == 3 and "optimizer" not in teacher
    assert zero["reduce_bucket_size"] == 1024 * 1024
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 1024 * 1024)
    assert zero["stage3_param_persistence_threshold"] == 1234  # a value the user set is kept
    assert training["zero_optimization"]["reduce_bucket_size"] == "auto"  # the student's config is not modified

    stage2 = deepspeed_teacher_config({"zero_optimization": {"stage": 2}, "scheduler": {}}, hidden_size=1024)
    assert stage2 == {"zero_optimization": {"stage": 0}}  # replicated, inference only
