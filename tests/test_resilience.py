"""What survives a bad day: a kill while a checkpoint is written, a resumed stream, NaN losses, broken images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback

import hf_distill.data.views as views
from hf_distill.testing import write_image_folder, write_webdataset_shards
from hf_distill.training.callbacks import NonFiniteLossError
from hf_distill.training.checkpoints import MANIFEST_NAME
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer, run_distillation

from conftest import tiny_argv

ROOT = Path(__file__).resolve().parents[1]
SIX_STEPS = ("--num_iterations", "6", "--lambda_feat", "1.0")


def _student_state(trainer) -> dict[str, torch.Tensor]:
    return trainer.accelerator.unwrap_model(trainer.model).state_dict()


@pytest.fixture(scope="module")
def straight_run(assets, tmp_path_factory):
    """An uninterrupted 6-step run: what every interrupted-and-resumed run must end with, bit for bit."""
    return run_distillation(*parse_distill_args(tiny_argv(assets, tmp_path_factory.mktemp("straight"), *SIX_STEPS)))


class StopAfterSave(TrainerCallback):
    """Raises like a kill right after the checkpoint of ``step`` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _run_until_checkpoint_4(argv: list[str]) -> None:
    trainer = build_trainer(*parse_distill_args(argv))
    trainer.add_callback(StopAfterSave(4))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


def _truncate(folder: Path) -> None:
    path = folder / "optimizer.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["intact", "missing_weights", "truncated_optimizer", "no_manifest"])
def test_rerun_resumes_from_the_newest_complete_checkpoint(damage, assets, straight_run, tmp_path, caplog):
    """Killed after checkpoint-4; checkpoint-4 then damaged or not: the same command ends as an uninterrupted run."""
    out = tmp_path / "run"
    _run_until_checkpoint_4(tiny_argv(assets, out, *SIX_STEPS))
    {"intact": lambda f: None,
     "missing_weights": lambda f: (f / "model.safetensors").unlink(),
     "truncated_optimizer": _truncate,
     "no_manifest": lambda f: (f / MANIFEST_NAME).unlink()}[damage](out / "checkpoint-4")

    with caplog.at_level("WARNING", logger="hf_distill"):
        resumed = run_distillation(*parse_distill_args(tiny_argv(assets, out, *SIX_STEPS)))
    resumed_from = "checkpoint-4" if damage == "intact" else "checkpoint-2"
    assert f"Resuming from {out / resumed_from}" in caplog.text
    assert ("Not resuming from" in caplog.text) == (damage != "intact")
    assert resumed.state.global_step == 6
    torch.testing.assert_close(_student_state(resumed), _student_state(straight_run), rtol=0, atol=0)


def test_kill_while_writing_a_checkpoint_leaves_the_previous_one(assets, straight_run, tmp_path, monkeypatch):
    """Killed in the middle of writing checkpoint-4: no checkpoint-4 appears, and the rerun resumes from 2."""
    out = tmp_path / "run"
    real_save_rng = Trainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt  # after the weights and optimizer were written, before the rest
        real_save_rng(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_at_step_4)
    trainer = build_trainer(*parse_distill_args(tiny_argv(assets, out, *SIX_STEPS)))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.setattr(Trainer, "_save_rng_state", real_save_rng)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]

    resumed = run_distillation(*parse_distill_args(tiny_argv(assets, out, *SIX_STEPS)))
    assert resumed.state.global_step == 6
    torch.testing.assert_close(_student_state(resumed), _student_state(straight_run), rtol=0, atol=0)
    assert (out / "checkpoint-6" / MANIFEST_NAME).is_file() and not (out / ".staging").exists()


def test_streamed_run_resumes_without_rereading_the_stream(assets, tmp_path, monkeypatch):
    shards = write_webdataset_shards(tmp_path / "shards", num_shards=2, per_shard=8, size=(96, 128), seed=7)
    extra = ("--dataset_dir", str(shards[0].parent), "--dataset_format", "webdataset", *SIX_STEPS)
    straight = run_distillation(*parse_distill_args(tiny_argv(assets, tmp_path / "straight", *extra)))

    out = tmp_path / "killed"
    _run_until_checkpoint_4(tiny_argv(assets, out, *extra))
    assert json.loads((out / "checkpoint-4" / "stream_state_0.json").read_text()) == {
        "epoch": 0, "positions": {"0": 8}}  # 4 steps x batch 2 from the one worker

    decoded = []
    real_make_sample = views._make_sample

    def counting(example, sampler, *, epoch, index):
        decoded.append(index)
        return real_make_sample(example, sampler, epoch=epoch, index=index)

    monkeypatch.setattr(views, "_make_sample", counting)
    resumed = run_distillation(*parse_distill_args(tiny_argv(assets, out, *extra)))
    assert resumed.state.global_step == 6
    assert decoded == list(range(8, 12))  # only the 2 new batches: nothing already trained on is decoded again
    torch.testing.assert_close(_student_state(resumed), _student_state(straight), rtol=0, atol=0)


# ---- non-finite losses -------------------------------------------------------------------------------------------


def test_nonfinite_steps_are_skipped_and_counted(assets, nan_teacher, tmp_path):
    argv = tiny_argv(assets, tmp_path / "run", "--teacher_models", str(assets["teacher_large"]), str(nan_teacher),
                     "--num_iterations", "6", "--logging_steps", "100")
    trainer = build_trainer(*parse_distill_args(argv))
    drawn_nan = []
    for step in range(6):
        trainer.state.global_step = step
        drawn_nan.append(trainer.draw_teacher() == 1)
    assert 0 < sum(drawn_nan) < 6  # the seed draws both teachers: the test covers both kinds of step
    trainer.state.global_step = 0
    trainer.train()
    summary = trainer.state.log_history[-1]
    assert summary["nonfinite_steps"] == sum(drawn_nan)
    assert torch.isfinite(torch.tensor(summary["train_loss"]))
    assert all(torch.isfinite(p).all() for p in _student_state(trainer).values())


def test_consecutive_nonfinite_steps_stop_the_run_without_touching_the_weights(assets, nan_teacher, tmp_path):
    argv = tiny_argv(assets, tmp_path / "run", "--teacher_models", str(nan_teacher), "--max_nonfinite_steps", "3")
    trainer = build_trainer(*parse_distill_args(argv))
    before = {k: v.clone() for k, v in _student_state(trainer).items()}
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps had a non-finite loss"):
        trainer.train()
    torch.testing.assert_close(_student_state(trainer), before, rtol=0, atol=0)
    assert not trainer.optimizer.state  # no moment was ever updated

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "distill.py"), *argv[:-1], "2",
                             "--output_dir", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "distill.py: error: 2 consecutive steps had a non-finite loss" in result.stderr
    assert "Traceback" not in result.stderr


# ---- what the console says ---------------------------------------------------------------------------------------


def test_console_names_each_broken_image_once_and_counts_skips_in_the_summary(assets, tmp_path):
    data = write_image_folder(tmp_path / "images", num_images=5, size=(96, 128), seed=9, nested=False)
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "run"
    argv = tiny_argv(assets, out, "--dataset_dir", str(data), "--num_iterations", "9", "--logging_steps", "100",
                     "--checkpoint_interval", "100")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "distill.py"), *argv],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    console = result.stdout + result.stderr
    # 9 steps x 2 samples over 6 files: the broken one comes up in 3 epochs, named once
    assert console.count("broken.jpg") == 1 and "cannot decode" in console
    summary = next(line for line in console.splitlines() if "train_runtime" in line)
    assert "'skipped_samples': 3" in summary
    logged = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
    assert logged[-1]["skipped_samples"] == 3
    assert "pin_memory" not in console  # no accelerator here: nothing is pinned, nothing warns
