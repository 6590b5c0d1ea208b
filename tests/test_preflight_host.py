"""The preflight on the machine it runs on (a login node without a GPU), the downloads its fixes name, its
photographs row; training-time evaluation of your own data under a declaration; infer.py's outputs."""

import numpy as np
import pytest
from PIL import Image

from conftest import load_file_module
from hf_distill.data.images import LARGE_IMAGE_PIXELS
from hf_distill.repositories import REPOSITORIES
from hf_distill.teachers import GenPerceptTeacher
from hf_distill.testing.photos import write_phone_photos, write_rgbd_folder
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.data import build_eval_dataset
from hf_distill.training.preflight import CheckResult, check_training_data
from hf_distill.training.preflight.models import offline_fix
from hf_distill.training.preflight.host import parse_for_preflight

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _argv(assets, tmp_path, *extra):
    return ["--teacher_models", str(assets["teacher_large"]), "--student_arch", str(assets["student"]),
            "--dataset_dir", str(assets["data"]), "--output_dir", str(tmp_path / "out"), "--global_crop_size", "56",
            "--local_crop_size", "42", "--min_region", "80", *extra]


def test_bf16_on_a_host_without_gpu_is_one_row(assets, tmp_path, monkeypatch):
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: False)
    argv = _argv(assets, tmp_path, "--bf16", "true", "--preflight")
    with pytest.raises(ValueError, match="doesn't support bf16"):
        parse_distill_args(argv)  # what stopped the preflight before any check ran
    _, _, args, rows = parse_for_preflight(argv, parse_distill_args, CheckResult)
    assert args.preflight and not args.bf16
    assert [(row.check, row.status) for row in rows] == [("precision", "WARN")]
    assert "doesn't support bf16" in rows[0].result and "--bf16 false" in rows[0].fix
    _, _, args, rows = parse_for_preflight(_argv(assets, tmp_path, "--preflight"), parse_distill_args, CheckResult)
    assert rows == [] and args.preflight
    with pytest.raises(ValueError, match="--eval_dataset_dir and --eval_dataset_name"):  # others are not swallowed
        parse_for_preflight(_argv(assets, tmp_path, "--eval_dataset_dir", "a", "--eval_dataset_name", "b"),
                            parse_distill_args, CheckResult)


def test_fixes_name_repositories_not_aliases():
    fix = offline_fix("genpercept-disparity")
    unets = REPOSITORIES[GenPerceptTeacher.HUB_UNETS["genpercept-disparity"]].hub_id
    base = REPOSITORIES[GenPerceptTeacher.HUB_BASE].hub_id
    assert f"`hf download {unets}`" in fix and f"`hf download {base}`" in fix
    assert "hf download genpercept-disparity" not in fix
    assert "`hf download depth-anything/Depth-Anything-V2-Large-hf`" in offline_fix("depthanything-large")


def test_photographs_row_names_what_the_rules_change(assets, tmp_path):
    write_phone_photos(tmp_path / "photos", panorama_width=1600)
    big = tmp_path / "photos" / "huge.png"  # above LARGE_IMAGE_PIXELS, cheap to write: one colour
    side = int(np.sqrt(LARGE_IMAGE_PIXELS)) + 8
    Image.new("L", (side, side)).save(big)
    model_args, data_args, args = parse_distill_args(_argv(assets, tmp_path))
    data_args.dataset_dir = str(tmp_path / "photos")
    ctx = type("Ctx", (), {"data_args": data_args, "args": args, "facts": {}})()
    rows = {row.check: row for row in check_training_data(ctx)}
    photos = rows["photographs"]
    assert photos.status == "WARN" and "--global_crop_size" in photos.fix
    assert "EXIF-rotated (read upright): 2 (portrait_exif6.jpg, upside_down_exif3.jpg)" in photos.result
    assert "small.png 28x20" in photos.result and f"huge.png {side}x{side}" in photos.result
    assert ctx.facts["image_sizes"].count((96, 128)) == 1  # the portrait, by its displayed size


def test_training_time_evaluation_reads_a_declared_dataset(assets, tmp_path):
    import datasets

    write_rgbd_folder(tmp_path / "stereo", 2, size=(48, 64), gt_format="npy", kind="disparity", scale=1.0,
                      portrait=False)
    table = datasets.Dataset.from_dict({
        "image": [str(tmp_path / "stereo" / "images" / f"sample_{i}.jpg") for i in range(2)],
        "disparity": [np.load(tmp_path / "stereo" / "depth" / f"sample_{i}.npy") for i in range(2)],
    }).cast_column("image", datasets.Image())
    table.save_to_disk(tmp_path / "dataset")
    argv = _argv(assets, tmp_path, "--eval_dataset_name", str(tmp_path / "dataset"), "--depth_column", "disparity",
                 "--eval_gt_kind", "disparity", "--eval_strategy", "steps", "--eval_steps", "1")
    _, data_args, args = parse_distill_args(argv)
    samples = build_eval_dataset(data_args, args)
    assert (samples.min_depth, samples.max_depth) == (0.0, np.inf)  # relative ground truth: no metric range
    disparity = np.load(tmp_path / "stereo" / "depth" / "sample_0.npy")
    reference = samples[0]["reference"]
    valid = disparity > 0
    np.testing.assert_allclose(reference[valid], 1.0 / disparity[valid], rtol=1e-6)
    assert (reference[~valid] == 0).all()
    with pytest.raises(ValueError, match="aligned in disparity space"):
        build_eval_dataset(*parse_distill_args([*argv, "--eval_alignment", "depth"])[1:])


def test_infer_keeps_same_named_files_apart(assets, tmp_path, capsys):
    photos = tmp_path / "in"
    write_phone_photos(photos, panorama_width=800)
    Image.open(photos / "plain.webp").save(photos / "plain.png")
    script = load_file_module(ROOT / "scripts" / "infer.py", "infer_own")
    assert script.main(["--checkpoint", str(assets["student"]), "--input_dir", str(photos), "--output_dir",
                        str(tmp_path / "out"), "--save_raw", "npy"]) == 0
    assert "11 depth maps written" in capsys.readouterr().out and (tmp_path / "out" / "plain_png_depth.png").is_file()
    assert (tmp_path / "out" / "plain_webp_depth.png").is_file()
    assert np.load(tmp_path / "out" / "portrait_exif6_depth.npy").shape == (128, 96)
    assert np.load(tmp_path / "out" / "small_depth.npy").shape == (20, 28)
