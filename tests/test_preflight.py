"""The preflight (`scripts/distill.py ... --preflight`): several faults planted at once are each reported on their own
line; a good recipe passes and runs one real step and one evaluation batch without writing into output_dir."""

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import DepthAnythingForDepthEstimation

from conftest import load_file_module, tiny_argv
from hf_distill.testing import write_eval_benchmark, write_image_folder
from hf_distill.training import preflight
from hf_distill.training.preflight import resources
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.preflight import FAIL, PASS, WARN, run_preflight

ROOT = Path(__file__).resolve().parents[1]


def distill_main(argv: list[str], capsys) -> tuple[int, str]:
    """scripts/distill.py's main(argv) in this process: (exit code, stdout)."""
    module = load_file_module(ROOT / "scripts" / "distill.py", "distill_script")
    capsys.readouterr()
    code = module.main(argv)
    return code, capsys.readouterr().out


def rows_by_check(report) -> dict[str, list]:
    rows: dict[str, list] = {}
    for row in report.rows:
        rows.setdefault(row.check, []).append(row)
    return rows


@pytest.fixture
def eval_nyu(tmp_path) -> list[str]:
    split = write_eval_benchmark("nyu", tmp_path / "nyu", 3, seed=3)
    return ["--eval_strategy", "steps", "--eval_steps", "2", "--eval_benchmark", "nyu", "--eval_dataset_dir",
            str(tmp_path / "nyu"), "--eval_split_file", str(split), "--per_device_eval_batch_size", "2"]


def test_a_good_recipe_passes_and_runs_one_step_and_one_evaluation_batch(assets, tmp_path, eval_nyu, capsys):
    out = tmp_path / "run"
    code, stdout = distill_main(tiny_argv(assets, out, *eval_nyu, "--preflight"), capsys)
    assert code == 0, stdout
    table = stdout[stdout.index("check "):]
    for check in ("teacher teacher_large", "student student", "training data", "views", "memory", "disk",
                  "evaluation", "one training step", "one evaluation batch"):
        line = next(line for line in table.splitlines() if line.startswith(check))
        assert f"  {PASS}  " in line, line
    assert "8 examples; read 8: 0 broken; sizes (128, 96)..(128, 96)" in table
    assert "3 samples with depth" in table and "2 samples: eval_abs_rel" in table  # one batch of 2
    assert "licence unknown" in table  # a local teacher without a card
    for model in ("teacher teacher_large", "student"):  # each model's first-batch output, in the dtype it runs in
        line = next(line for line in table.splitlines() if line.startswith(f"output of {model}"))
        assert "representable in float32" in line or "too flat for float32" in line, line
    assert table.rstrip().endswith("preflight: passed")
    assert not out.exists()  # nothing of the real run is written


def test_planted_faults_are_all_reported_at_once(assets, tmp_path, monkeypatch):
    """A teacher that does not resolve, broken images, --min_region larger than the images, too little memory, an
    output_dir under a file, --push_to_hub without a token and missing evaluation data: one run, one line each."""
    data = write_image_folder(tmp_path / "images", num_images=3, size=(60, 80), seed=1)
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = tiny_argv(assets, blocker / "out", "--dataset_dir", str(data), "--min_region", "500",
                     "--push_to_hub", "--hub_model_id", "someone/student", "--eval_strategy", "steps",
                     "--eval_benchmark", "nyu", "--eval_dataset_dir", str(tmp_path / "missing_nyu"))
    argv[argv.index("--teacher_models") + 1] = "depthanything-large"  # an alias that is not in the (empty) cache
    argv += ["--teacher_models", "depthanything-large", str(assets["teacher_base"])]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(resources, "free_memory", lambda args: (1024**2, "available RAM"))  # 1 MiB left
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    report = run_preflight(*parse_distill_args(argv))
    rows = rows_by_check(report)
    assert not report.passed
    (large,) = rows["teacher depthanything-large"]
    assert large.status == FAIL and "depth-anything/Depth-Anything-V2-Large-hf" in large.result
    assert "hf download depth-anything/Depth-Anything-V2-Large-hf" in large.fix
    (base,) = rows["teacher teacher_base"]
    assert base.status == PASS and "licence unknown" in base.result
    (data_row,) = rows["training data"]
    assert data_row.status == WARN and "4 examples; read 4: 1 broken" in data_row.result and "broken.jpg" in data_row.result
    assert [r.status for r in rows["views"]] == [WARN]
    assert "--min_region 500 is larger than every sampled image (short side at most 60)" in rows["views"][0].result
    assert rows["views"][0].fix == "lower --min_region to at most 60 to draw regions of varied scale"
    (memory,) = rows["memory"]
    assert memory.status == FAIL and memory.result.endswith("vs 1.0 MiB available RAM") and "--activation" in memory.fix
    (disk,) = rows["disk"]
    assert disk.status == FAIL and "is not writable" in disk.result and f"{blocker} is a file" in disk.result
    (hub,) = rows["hub"]
    assert hub.status == FAIL and "without a Hugging Face token" in hub.result and "hf auth login" in hub.fix
    (evaluation,) = rows["evaluation"]
    assert evaluation.status == FAIL and "missing_nyu" in evaluation.result
    (step,) = rows["one training step"]
    assert step.status == WARN and "not run" in step.result  # the real step waits for the failures to be fixed
    text = report.format()
    assert text.splitlines()[-1] == "preflight: 5 check(s) failed"
    assert len(text.splitlines()) == len(report.rows) + 2  # header, one line per row, verdict
    assert not (blocker / "out").exists()


WHOAMI = {"name": "me", "orgs": [{"name": "my-org"}]}


@pytest.mark.parametrize("token, repo_id, status", [
    ({"role": "write"}, "me/student", PASS),
    ({"role": "write"}, "my-org/student", PASS),
    ({"role": "write"}, "someone-else/student", FAIL),
    ({"role": "read"}, "me/student", FAIL),
    ({"role": "fineGrained", "fineGrained": {"scoped": [{"entity": {"type": "org", "name": "my-org"},
                                                         "permissions": ["repo.content.read", "repo.write"]}]}},
     "my-org/student", PASS),
    ({"role": "fineGrained", "fineGrained": {"scoped": [{"entity": {"type": "user", "name": "me"},
                                                         "permissions": ["repo.content.read"]}]}},
     "me/student", FAIL),
])
def test_hub_write_access_is_checked_at_the_api_boundary(assets, tmp_path, monkeypatch, token, repo_id, status):
    calls = []

    def whoami(api, token=None, **kwargs):
        calls.append(token)
        return {**WHOAMI, "auth": {"type": "access_token", "accessToken": token_info}}

    token_info = token
    monkeypatch.setattr(HfApi, "whoami", whoami)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_fake")
    args = parse_distill_args(tiny_argv(assets, tmp_path / "out", "--push_to_hub", "--hub_model_id", repo_id))
    report = run_preflight(*args, checks=[preflight.check_hub], dev_run=False)
    (row,) = report.rows
    assert (row.check, row.status) == ("hub", status) and calls == ["hf_fake"]
    assert repo_id in row.result


def test_the_script_exits_non_zero_with_the_table(assets, tmp_path, capsys):
    argv = tiny_argv(assets, tmp_path / "out", "--preflight", "--teacher_models", str(tmp_path / "no_teacher"))
    code, stdout = distill_main(argv, capsys)
    assert code == 1, stdout
    line = next(line for line in stdout.splitlines() if line.startswith("teacher no_teacher"))
    assert f"  {FAIL}  " in line
    assert "one training step" in stdout and stdout.rstrip().endswith("preflight: 1 check(s) failed")


def test_a_check_is_one_function_in_the_list(assets, tmp_path):
    def check_always(ctx):
        yield preflight.CheckResult("custom", WARN, f"batch {ctx.args.per_device_train_batch_size}", "none")

    def check_broken(ctx):
        raise RuntimeError("boom")

    args = parse_distill_args(tiny_argv(assets, tmp_path / "out"))
    report = run_preflight(*args, checks=[check_always, check_broken], dev_run=False)
    assert [(r.check, r.status, r.result) for r in report.rows] == [
        ("custom", WARN, "batch 2"), ("broken", FAIL, "RuntimeError: boom")]
    assert not report.passed and check_always.__name__ not in preflight.PREFLIGHT_CHECKS


def test_genpercept_parts_resolve_with_the_source_used_and_its_licence(assets, tmp_path, monkeypatch):
    """The paper's second teacher by its alias, offline, from a Hub cache holding SD 2.1's maintained copy only."""
    from test_repositories import MIRROR, cache_repo
    from test_teachers import write_tiny_genpercept

    cache = tmp_path / "hub"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    parts = write_tiny_genpercept(tmp_path / "parts")
    cache_repo(cache, MIRROR, parts)
    args = parse_distill_args(tiny_argv(assets, tmp_path / "out", "--teacher_models", "genpercept-disparity"))
    (row,) = run_preflight(*args, checks=[preflight.check_teachers], dev_run=False).rows
    assert row.status == FAIL and "guangkaixu/genpercept-models" in row.result  # its UNet repository is not cached
    (unets := tmp_path / "unets" / "unet_disparity_v2").mkdir(parents=True)
    (unets / "config.json").write_bytes((parts / "unet" / "config.json").read_bytes())
    cache_repo(cache, "guangkaixu/genpercept-models", tmp_path / "unets")
    (row,) = run_preflight(*args, checks=[preflight.check_teachers], dev_run=False).rows
    assert row.status == PASS, row
    assert f"UNet guangkaixu/genpercept-models/unet_disparity_v2, VAE/text encoder/tokenizer {MIRROR}" in row.result
    assert "licence other (GenPercept's weights are released for non-commercial academic use only)" in row.result


def test_the_memory_estimate_of_the_papers_recipe_matches_the_measured_teacher_figures(tmp_path):
    """sa1b_multiteacher at batch 8 in bf16: 24 teacher images per step (global view + 2 patches). BENCHMARKS.md
    (bench_teachers.py, CPU float32, batch 1) measured 0.66 GiB per Depth Anything V2 Large forward at 560 and 2.32 GiB
    per GenPercept forward at 768; x24 images, halved for bf16: 7.9 GiB and 27.8 GiB."""
    from hf_distill.teachers import TEACHER_FAMILIES

    args = parse_distill_args(["--config", "sa1b_multiteacher", "--dataset_dir", str(tmp_path), "--use_cpu",
                               "--teacher_dtype", "bfloat16"])
    ctx = preflight.PreflightContext(*args)
    large, genpercept, student = 335.3e6, 949.6e6, 97.5e6  # parameters (BENCHMARKS.md, README)
    for teachers in ([("l", TEACHER_FAMILIES["depth_anything"], large)],
                     [("g", TEACHER_FAMILIES["genpercept-disparity"], genpercept)]):
        ctx.facts.update(teachers=teachers, student=(None, student))
        parts = preflight.estimate_memory(ctx)
        measured = 0.66 if teachers[0][0] == "l" else 2.32
        assert parts["teacher activations"] / 1024**3 == pytest.approx(24 * measured / 2, rel=0.02)
        assert parts["teacher weights"] == 2 * teachers[0][2]
    assert parts["student training"] >= 16 * student  # fp32 weights, gradients, two AdamW moments


def test_a_teacher_checkpoint_file_needs_no_hub(assets, tmp_path):
    """The NYU recipe's form: an alias for the structure and an original weights file (here offline, empty cache)."""
    weights = tmp_path / "depth_anything_v2_vits.pth"
    argv = tiny_argv(assets, tmp_path / "out", "--teacher_models", "depthanything-small", "--teacher_checkpoints",
                     str(weights))
    (row,) = run_preflight(*parse_distill_args(argv), checks=[preflight.check_teachers], dev_run=False).rows
    assert row.status == FAIL and f"--teacher_checkpoints {weights} does not exist" in row.result
    weights.write_bytes(b"")
    (row,) = run_preflight(*parse_distill_args(argv), checks=[preflight.check_teachers], dev_run=False).rows
    assert row.status == PASS and "structure of depthanything-small, weights depth_anything_v2_vits.pth" in row.result
    assert "24.8M parameters; licence apache-2.0" in row.result


def test_a_flat_teacher_is_reported_for_the_dtype_it_runs_in(assets, tmp_path, capsys):
    """On the demo's scenes the shipped demo teacher's maps survive bf16 autocast; a teacher whose head leaves a flat
    map (the old
    FRESH_HEAD_BIAS start: a bias of 1 over a signal of ~1e-6) is a WARN row under --bf16."""
    flat = tmp_path / "flat_teacher"
    shutil.copytree(assets["teacher_large"], flat)
    model = DepthAnythingForDepthEstimation.from_pretrained(flat)
    with torch.no_grad():
        model.head.conv3.weight.mul_(1e-6)
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(flat)
    argv = ["--config", "demo", "--output_dir", str(tmp_path / "run"), "--num_generated_scenes", "8", "--preflight",
            "--bf16", "--teacher_models", str(flat), "demo-teacher"]
    code, stdout = distill_main(argv, capsys)
    table = stdout[stdout.index("check "):]
    flat_row = next(line for line in table.splitlines() if line.startswith("output of teacher flat_teacher"))
    demo_row = next(line for line in table.splitlines() if line.startswith("output of teacher demo-teacher"))
    assert f"  {WARN}  " in flat_row and "too flat for bfloat16" in flat_row, flat_row
    assert f"  {PASS}  " in demo_row and "representable in bfloat16" in demo_row, demo_row
    assert code == 0  # a warning, not a failure
