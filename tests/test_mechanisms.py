"""benchmarks/mechanisms.py and its free-map student (benchmarks/free_map.py): verdicts on made-up results, the free
map trained through the real trainer, and --quick end to end."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _mechanisms_module():
    return importlib.import_module("benchmarks.mechanisms")


def _runs(mechanisms, values: dict[str, dict[str, float]], seeds: int, student: str = "network") -> list[dict]:
    """Runs of every setup whose metrics are `values[setup]` (default 0.2) plus a seed-dependent wobble of 0.001."""
    runs = []
    for setup in mechanisms.GRIDS[student]:
        for seed in range(seeds):
            metrics = {m: values.get(setup.name, {}).get(m, 0.2) + 0.001 * (seed % 2) for m in mechanisms.METRICS}
            runs.append({"config": setup.name, "seed": seed, "metrics": metrics})
    return runs


def _teachers(mechanisms) -> dict[str, dict[str, float]]:
    return {spec: {m: 0.3 for m in mechanisms.METRICS} for spec in (
        "oracle", mechanisms.RESOLUTION, mechanisms.AFFINE, mechanisms.FAR, mechanisms.NEAR, mechanisms.NOISE)}


def test_verdicts_follow_the_ablation_rule():
    mechanisms = _mechanisms_module()
    holding = {"res SC+LG": {"edge_abs_rel": 0.1}, "affine SC none": {"abs_rel": 0.25},
               "affine LG none": {"abs_rel": 0.4},
               "far+near": {"abs_rel": 0.1, "abs_rel_far": 0.1, "abs_rel_near": 0.1}}
    verdicts = {p["group"]: p for p in mechanisms.judge(_runs(mechanisms, holding, 5), _teachers(mechanisms))}
    assert {g: p["verdict"] for g, p in verdicts.items()} == dict.fromkeys(
        ("resolution", "affine", "bias", "noise"), "held")
    assert verdicts["affine"]["numbers"]["gap none - best, LG"] == pytest.approx(0.2)
    assert verdicts["noise"]["numbers"]["abs_rel student < teacher"]["b"] == 0.3

    # none worse under SC than under LG: "most of all under LG" fails although every difference is real
    reversed_gap = {**holding, "affine SC none": {"abs_rel": 0.5}}
    verdicts = {p["group"]: p["verdict"] for p in mechanisms.judge(_runs(mechanisms, reversed_gap, 5),
                                                                    _teachers(mechanisms))}
    assert verdicts["affine"] == "not held" and verdicts["resolution"] == "held"
    # a difference inside two standard errors is no difference: not held
    within_noise = {**holding, "res SC+LG": {"edge_abs_rel": 0.1995}}
    verdicts = {p["group"]: p["verdict"] for p in mechanisms.judge(_runs(mechanisms, within_noise, 5),
                                                                    _teachers(mechanisms))}
    assert verdicts["resolution"] == "not held"
    one_seed = mechanisms.judge(_runs(mechanisms, holding, 1), _teachers(mechanisms))
    assert {p["verdict"] for p in one_seed} == {"no verdict"}


def test_a_flaw_smaller_than_the_students_floor_is_untestable():
    """Teachers at 0.3 and an exact-oracle student at 0.2 (+0.001 on odd seeds): testable; a teacher at or below the
    floor makes its prediction "untestable at this scale", whatever its students show."""
    mechanisms = _mechanisms_module()
    holding = {"res SC+LG": {"edge_abs_rel": 0.1}, "affine SC none": {"abs_rel": 0.25},
               "affine LG none": {"abs_rel": 0.4},
               "far+near": {"abs_rel": 0.1, "abs_rel_far": 0.1, "abs_rel_near": 0.1}}
    runs = _runs(mechanisms, holding, 5)
    teachers = _teachers(mechanisms)
    teachers[mechanisms.NOISE]["abs_rel"] = 0.15  # better than the floor: a student cannot beat it by averaging
    teachers[mechanisms.NEAR]["abs_rel_near"] = 0.2006  # inside 2 standard errors of the floor (0.2004, 2 SE 0.0005)
    teachers[mechanisms.RESOLUTION]["edge_abs_rel"] = 0.21  # a real margin over the floor: still testable
    verdicts = {p["group"]: p for p in mechanisms.judge(runs, teachers)}
    untestable = "untestable at this scale"
    assert {g: p["verdict"] for g, p in verdicts.items()} == {
        "resolution": "held", "affine": "held", "bias": untestable, "noise": untestable}
    gate = verdicts["noise"]["numbers"][f"testable: exact-oracle student abs_rel < teacher {mechanisms.NOISE} abs_rel"]
    assert (gate["a"], gate["b"], gate["held"]) == (pytest.approx(0.2004), 0.15, False)
    assert verdicts["noise"]["numbers"]["abs_rel student < teacher"]["held"] is False  # reported all the same
    near_gate = f"testable: exact-oracle student abs_rel_near < teacher {mechanisms.NEAR} abs_rel_near"
    assert verdicts["bias"]["numbers"][near_gate]["verdict"].endswith("(no difference at this scale)")
    # without the flawless-oracle setup nothing is gated
    ungated = mechanisms.judge([r for r in runs if r["config"] != "exact"], teachers)
    assert {p["group"]: p["verdict"] for p in ungated}["bias"] == "held"


def test_floor_equivalent_is_the_nearest_ladder_teacher():
    mechanisms = _mechanisms_module()
    ladder = {"oracle:resolution=2": {"abs_rel": 0.22}, "oracle:resolution=3": {"abs_rel": 0.16},
              "oracle:resolution=4": {"abs_rel": 0.12}}
    assert mechanisms.floor_equivalent({"abs_rel": 0.2}, ladder) == "oracle:resolution=2"
    assert mechanisms.floor_equivalent({"abs_rel": 0.15}, ladder) == "oracle:resolution=3"
    assert mechanisms.floor_equivalent({"abs_rel": 0.15}, {}) is None


def test_edge_band_marks_pixels_near_depth_edges():
    mechanisms = _mechanisms_module()
    gt = torch.full((8, 12), 2.0)
    gt[:, 6:] = 4.0  # one vertical edge: columns 5 and 6 are its two sides
    band = mechanisms.edge_band(gt, width=2)
    assert band[:, 3:9].all() and not band[:, :3].any() and not band[:, 9:].any()


def test_free_map_ablation_predictions():
    """hybrid never worse than the other normalisations; dr not beaten by dp / ds; each verdict names its student."""
    mechanisms = _mechanisms_module()
    runs = _runs(mechanisms, {"res LG none": {"abs_rel": 0.3}, "res SC+LG hybrid ds": {"abs_rel": 0.3}}, 5, "free_map")
    verdicts = {p["group"]: p for p in mechanisms.judge(runs, _teachers(mechanisms), "free_map")}
    assert verdicts["normalization"]["verdict"] == "held" and verdicts["hdn"]["verdict"] == "held"
    assert {p["student"] for p in verdicts.values()} == {"free_map"}
    assert len(verdicts["normalization"]["numbers"]) == 12 and len(verdicts["hdn"]["numbers"]) == 4
    # hybrid worse than global under the affine teacher (LG), beyond two standard errors: not held
    worse = {"affine LG hybrid": {"abs_rel": 0.25}, "res SC+LG hybrid dr": {"abs_rel": 0.25}}
    runs = _runs(mechanisms, worse, 5, "free_map")
    verdicts = {p["group"]: p for p in mechanisms.judge(runs, _teachers(mechanisms), "free_map")}
    assert verdicts["normalization"]["verdict"] == "not held" and verdicts["hdn"]["verdict"] == "not held"
    assert verdicts["normalization"]["numbers"]["not worse: abs_rel affine LG hybrid vs global"]["held"] is False
    assert verdicts["normalization"]["numbers"]["not worse: abs_rel affine SC hybrid vs global"]["held"] is True
    # the network grid has no ablation rows: no such predictions
    assert {p["group"] for p in mechanisms.judge(_runs(mechanisms, {}, 5), _teachers(mechanisms))} == {
        "resolution", "affine", "bias", "noise"}


def _free_map_trainer(tmp_path, *flags: str):
    free_map = importlib.import_module("benchmarks.free_map")
    argv = ["--config", "demo", "--output_dir", str(tmp_path), "--generated_scene_size", "112", "112",
            "--min_region", "56", "--global_crop_size", "56", "--local_crop_size", "56", "--min_local_crop", "28",
            "--num_generated_scenes", "2", "--per_device_train_batch_size", "2", "--lambda_feat", "0",
            "--lambda_anchor", "0", "--lambda_grad", "0", "--save_strategy", "no", "--visualize_steps", "0",
            "--disable_tqdm", "true", "--teacher_models", "oracle", *flags]
    return free_map, free_map.build_free_map_trainer(argv)


def test_free_map_view_is_the_teachers_view(tmp_path):
    """A map holding a scene's exact disparity, read through a sample's region, is what the exact oracle teacher
    returns for that sample's global view (the view's depth is resampled, not its disparity: equal off the edges)."""
    free_map, trainer = _free_map_trainer(tmp_path)
    scenes = free_map.training_scenes(2, 112)
    with torch.no_grad():
        trainer.model.student.log_maps.copy_(torch.stack([-torch.from_numpy(s.depth).log() for s in scenes]))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["scene_index"].tolist() == [0, 1] and (batch["region"][:, 2] >= 56).all()
    teacher, _, _ = trainer.run_teacher(0, batch["global_view"], None, False, (batch["view_depth"], None))
    trainer.model.select(batch["scene_index"], batch["region"])
    views, tokens = trainer.model(batch["global_view"])
    assert tokens is None and views.shape == teacher.shape == (2, 56, 56)
    assert (views / teacher - 1).abs().median().item() < 1e-3
    with pytest.raises(ValueError, match="select"):
        trainer.model(batch["global_view"])  # a selection serves one forward


def test_free_map_learns_the_oracle_through_the_trainer(tmp_path):
    """Trained by the real trainer's loss (global normalisation, SC only), the maps move towards the scenes' depth."""
    free_map, trainer = _free_map_trainer(tmp_path, "--max_steps", "40", "--learning_rate", "0.05", "--warmup_steps",
                                          "2", "--normalization", "global", "--lambda_lg", "0",
                                          "--num_local_patches", "0", "--weight_decay", "0")
    mechanisms = _mechanisms_module()
    scenes = free_map.training_scenes(2, 112)
    before = mechanisms.score(free_map.trained_maps(trainer), scenes)["abs_rel"]
    trainer.train()
    after = mechanisms.score(free_map.trained_maps(trainer), scenes)["abs_rel"]
    assert before > 0.2 and after < 0.5 * before, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("student", ["free_map", "network"])
def test_quick_mechanisms_bench_writes_json_table_and_chart(tmp_path, student):
    bench = [sys.executable, "-m", "benchmarks.mechanisms", "--quick", "--student", student, "--output_dir", str(tmp_path)]
    result = subprocess.run(bench, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "mechanisms.json").read_text())
    mechanisms = _mechanisms_module()
    grid = mechanisms.GRIDS[student]
    assert report["seeds"] == [0] and [r["config"] for r in report["runs"]] == [s.name for s in grid]
    groups = ["resolution", "affine", "bias", "noise"] + (["normalization", "hdn"] if student == "free_map" else [])
    assert [p["group"] for p in report["predictions"]] == groups
    assert {p["student"] for p in report["predictions"]} == {student}
    assert all(p["verdict"] == "no verdict" and p["numbers"] for p in report["predictions"])  # one seed
    for run in report["runs"]:
        assert 0 < run["metrics"]["abs_rel"] < 10 and 0 <= run["metrics"]["delta1"] <= 1
    assert report["teachers"]["oracle"]["abs_rel"] < 1e-6  # the flawless oracle is exact
    assert report["teachers"][mechanisms.NOISE]["abs_rel"] > 0.05
    # the ladder: exact depth seen at fewer pixels is worse, and the floor is placed on it
    ladder = [report["teachers"][spec]["abs_rel"] for spec in mechanisms.LADDER]
    assert ladder == sorted(ladder, reverse=True) and report["floor"]["equivalent_teacher"] in mechanisms.LADDER
    assert "NO VERDICT" in result.stdout
    assert "| far+near |" in (tmp_path / "mechanisms.md").read_text()
    assert (tmp_path / "mechanisms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same command again reuses every finished run (runs.jsonl) instead of training again
    again = subprocess.run(bench, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert again.returncode == 0 and f"{len(grid)} runs reused" in again.stdout, again.stderr[-4000:]
    assert json.loads((tmp_path / "mechanisms.json").read_text())["runs"] == report["runs"]


@pytest.mark.slow
def test_only_and_extra_flags_run_one_setup_with_another_student(tmp_path):
    student = "benchmarks/students/demo-student-patch7"
    bench = [sys.executable, "-m", "benchmarks.mechanisms", "--quick", "--student", "network", "--output_dir",
             str(tmp_path), "--only", "exact", "--extra_flags", f"--student_arch {student}"]
    result = subprocess.run(bench, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "mechanisms.json").read_text())
    assert [r["config"] for r in report["runs"]] == ["exact"] and report["predictions"] == []
    assert report["settings"]["common"][-2:] == ["--student_arch", student]
    assert report["floor"]["equivalent_teacher"] in _mechanisms_module().LADDER
    from safetensors import safe_open

    with safe_open(str(tmp_path / "runs" / "network_exact_seed0" / "student_final.safetensors"), "pt") as saved:
        kernel = saved.get_slice("backbone.embeddings.patch_embeddings.projection.weight").get_shape()
    assert kernel == [48, 3, 7, 7]  # the flag reached the trainer: the demo student's 48 channels, 7-pixel patches
    wrong = subprocess.run([*bench[:-4], "--only", "exakt"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert wrong.returncode == 2 and "unknown setups ['exakt']" in wrong.stderr
