"""The Hub round trip through the public entry points: trainer.train() + push_to_hub() for every hub_strategy,
scripts/distill.py --push_to_hub end to end, and cards that are true on the Hub. HfApi is faked at its boundary
(create_repo / create_commit, see conftest.FakeHub); everything above it runs for real."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from conftest import CARD_ROUNDING, FAKE_USER, load_file_module, tiny_argv
from hf_distill.testing import write_eval_benchmark
from hf_distill.evaluation import METRIC_NAMES
from hf_distill.hub import is_training_result
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.card import CardInfo, build_student_card
from hf_distill.training.run import run_distillation

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
CHECKPOINT = ["checkpoint_manifest.json", "config.json", "model.safetensors", "optimizer.pt", "preprocessor_config.json",
              "projectors.safetensors", "rng_state.pth", "scheduler.pt", "trainer_state.json", "training_args.bin"]


@pytest.fixture(scope="module")
def nyu(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-sample NYUv2 benchmark fixture (480x640) and its split list."""
    root = tmp_path_factory.mktemp("nyu")
    return root, write_eval_benchmark("nyu", root, 2, seed=3)


def push_argv(assets, output_dir, *extra: str) -> list[str]:
    return tiny_argv(assets, output_dir, "--license", "apache-2.0", *extra)


def under(prefix: str, names: list[str]) -> list[str]:
    return [f"{prefix}/{name}" for name in names]


EXPECTED_COMMITS = {
    "end": [("End of training", STUDENT)],
    "every_save": [("Training in progress, step 2", STUDENT), ("Training in progress, step 4", STUDENT),
                   ("End of training", STUDENT)],
    "checkpoint": [("Training in progress, step 2", sorted(STUDENT + under("last-checkpoint", CHECKPOINT))),
                   ("Training in progress, step 4", sorted(STUDENT + under("last-checkpoint", CHECKPOINT))),
                   ("End of training", STUDENT)],
    "all_checkpoints": [("Training in progress, step 2", sorted(STUDENT + under("checkpoint-2", CHECKPOINT))),
                        ("Training in progress, step 4", sorted(STUDENT + under("checkpoint-4", CHECKPOINT))),
                        ("End of training", STUDENT)],
}


@pytest.mark.parametrize("strategy", list(EXPECTED_COMMITS))
def test_each_hub_strategy_uploads_the_student_and_what_it_documents(assets, tmp_path, fake_hub, strategy):
    out = tmp_path / "run"
    trainer = run_distillation(*parse_distill_args(push_argv(assets, out, "--push_to_hub", "--hub_strategy", strategy)))
    assert fake_hub.repos == [f"{FAKE_USER}/run"]  # created once, named after the output folder
    assert [(c["message"], c["paths"]) for c in fake_hub.commits] == EXPECTED_COMMITS[strategy]
    final = fake_hub.commits[-1]
    assert final["files"]["README.md"] == (out / "README.md").read_bytes()
    assert final["files"]["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = ModelCard.load(out / "README.md")
    assert card.data.model_name == f"{FAKE_USER}/run"  # the repository it was pushed to
    assert f'pipeline("depth-estimation", model="{FAKE_USER}/run")' in card.text
    if strategy != "end":  # each save carries the weights of its step and a card
        saved = load_file(out / "checkpoint-2" / "model.safetensors")
        with open(tmp_path / "step2.safetensors", "wb") as handle:
            handle.write(fake_hub.commits[0]["files"]["model.safetensors"])
        torch.testing.assert_close(load_file(tmp_path / "step2.safetensors"), saved, rtol=0, atol=0)
        assert fake_hub.commits[0]["files"]["README.md"].startswith(b"---\n")
    if strategy == "checkpoint":  # last-checkpoint/ is the newest checkpoint, resumable
        state = json.loads(fake_hub.commits[1]["files"]["last-checkpoint/trainer_state.json"])
        assert state["global_step"] == 4
        # The step-2 last-checkpoint/, as downloaded from the Hub, resumes the run to the very same weights.
        downloaded = tmp_path / "downloaded"
        for path, data in fake_hub.commits[0]["files"].items():
            if path.startswith("last-checkpoint/"):
                (downloaded / path).parent.mkdir(parents=True, exist_ok=True)
                (downloaded / path).write_bytes(data)
        resumed = run_distillation(*parse_distill_args(push_argv(
            assets, tmp_path / "resumed", "--resume_from_checkpoint", str(downloaded / "last-checkpoint"))))
        assert resumed.state.global_step == 4
        torch.testing.assert_close(resumed.model.state_dict(), trainer.model.state_dict(), rtol=0, atol=0)
    if strategy == "end":
        # save_model() with --push_to_hub pushes once more (the Trainer's contract), without recursing.
        trainer.save_model()
        assert [(c["message"], c["paths"]) for c in fake_hub.commits[1:]] == [("Model save", STUDENT)]


def load_script(name: str):
    return load_file_module(ROOT / "scripts" / name, name.replace(".py", "_script"))


def eval_flags(nyu) -> list[str]:
    return ["--eval_benchmark", "nyu", "--eval_dataset_dir", str(nyu[0]), "--eval_split_file", str(nyu[1]),
            "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size", "2"]


def test_distill_script_pushes_a_card_that_is_true_on_the_hub(assets, nyu, tmp_path, fake_hub):
    out = tmp_path / "out"
    argv = push_argv(assets, out, "--push_to_hub", "--hub_model_id", "someone/my-student", "--hub_strategy", "end",
                     *eval_flags(nyu))
    assert load_script("distill.py").main(argv) == 0
    [commit] = fake_hub.commits
    assert fake_hub.repos == ["someone/my-student"] and commit["repo_id"] == "someone/my-student"
    assert commit["paths"] == STUDENT
    text = commit["files"]["README.md"].decode()
    assert str(tmp_path) not in text and "/tmp" not in text  # no path of the training machine
    card = ModelCard.load(out / "README.md")
    assert card.data.model_name == "someone/my-student" and card.text.count("# someone/my-student\n") == 1
    assert 'pipeline("depth-estimation", model="someone/my-student")' in card.text
    assert card.text.count('.from_pretrained("someone/my-student")') == 2
    assert card.data.teachers == ["teacher_large"] and "**Teachers:** `teacher_large`" in card.text
    assert "**Training data:** `images` (image folder)" in card.text
    assert card.data.license == "apache-2.0" and card.data.base_model is None  # random init: no base model

    # The best and the last training-time evaluation (steps 2 and 4) are in the model-index.
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    logs = {log["step"]: log for log in state["log_history"] if "eval_abs_rel" in log}
    assert sorted(logs) == [2, 4]
    best = min(logs.values(), key=lambda log: log["eval_abs_rel"])
    training = [e for e in card.data.eval_results if is_training_result(e)]
    labels = {e.dataset_name for e in training}
    if best["step"] == 4:
        assert labels == {"NYUv2 (during training, best and last: step 4)"}
    else:
        assert labels == {"NYUv2 (during training, best: step 2)", "NYUv2 (during training, last: step 4)"}
    assert {e.dataset_config for e in training} == (
        {"training-time-best-and-last"} if best["step"] == 4 else {"training-time-best", "training-time-last"})
    for entry in training:
        step = int(entry.dataset_name.rsplit("step ", 1)[1].rstrip(")"))
        assert entry.dataset_type == "nyu_depth_v2" and entry.dataset_split == "test"
        assert entry.metric_value == pytest.approx(logs[step][f"eval_{entry.metric_type}"], abs=CARD_ROUNDING)
    assert len(training) == len(labels) * len(METRIC_NAMES)

    # scripts/evaluate.py --update_card adds its own entries beside them; running it again or re-running the
    # training command (which resumes, trains nothing more and pushes again) duplicates nothing.
    evaluate = [sys.executable, str(ROOT / "scripts/evaluate.py"), "--model", str(out), "--benchmark", "nyu",
                "--data_dir", str(nyu[0]), "--split_file", str(nyu[1]), "--update_card"]
    for _ in range(2):
        result = subprocess.run(evaluate, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert load_script("distill.py").main(argv) == 0
    card = ModelCard.load(out / "README.md")
    published = [e for e in card.data.eval_results if not is_training_result(e)]
    assert {(e.dataset_name, e.metric_type) for e in published} == {("NYUv2", m) for m in METRIC_NAMES}
    assert len(card.data.eval_results) == len(published) + len(training)
    groups = card.data.to_dict()["model-index"][0]["results"]  # as the Hub reads it: one group per dataset config
    assert len(groups) == 1 + len(labels)
    for group in groups:
        types = [metric["type"] for metric in group["metrics"]]
        assert sorted(types) == sorted(METRIC_NAMES), group["dataset"]
    assert fake_hub.commits[-1]["files"]["README.md"] == (out / "README.md").read_bytes()


def test_card_facts_come_from_the_arguments_without_loading_weights(tmp_path):
    """Hub teachers, initial weights and a Hub dataset: rendered from the arguments alone (nothing is loaded)."""
    model_args, data_args, args = parse_distill_args([
        "--teacher_models", "depthanything-large", "depthanything-base", "--teacher_sampling_weights", "7", "3",
        "--student_arch", "depthanything-small", "--dataset_name", "someone/nyu-depth", "--eval_dataset_name",
        "someone/nyu-depth", "--eval_dataset_split", "validation", "--depth_column", "depth_map",
        "--eval_benchmark", "nyu", "--eval_strategy", "steps", "--output_dir", str(tmp_path / "student"),
        "--license", "apache-2.0",
    ])
    info = CardInfo.from_arguments(model_args, data_args, args)
    with pytest.warns(UserWarning, match="depthanything-large, depthanything-base is licensed cc-by-nc-4.0.*"
                                         "instead of the requested apache-2.0"):
        card = build_student_card(info, args, model_name="student")
    data = card.data
    assert data.license == "cc-by-nc-4.0" and data.datasets == ["someone/nyu-depth"]
    assert data.base_model == "depth-anything/Depth-Anything-V2-Small-hf"
    assert data.teachers == ["depth-anything/Depth-Anything-V2-Large-hf", "depth-anything/Depth-Anything-V2-Base-hf"]
    assert "[someone/nyu-depth](https://huggingface.co/datasets/someone/nyu-depth) (Hub dataset, split `train`)" \
        in card.text
    assert ("non-commercial, set by the teacher depthanything-large (cc-by-nc-4.0) and the teacher depthanything-base "
            "(cc-by-nc-4.0):") in card.text
    assert "| `teacher_probabilities` | `[0.7, 0.3]` |" in card.text
    assert info.eval_data.index_type == "someone/nyu-depth" and info.eval_data.split == "validation"
    # Without --license, a Small-only lineage is apache-2.0 (no warning).
    model_args, data_args, args = parse_distill_args([
        "--teacher_models", "depthanything-small", "--student_arch", "depthanything-small", "--dataset_dir",
        str(tmp_path), "--output_dir", str(tmp_path / "s")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = build_student_card(CardInfo.from_arguments(model_args, data_args, args), args, model_name="s")
    assert card.data.license == "apache-2.0"
    assert ("**Licence:** apache-2.0: the licence of the teacher and initial weights depthanything-small "
            "(apache-2.0).") in card.text
