"""Your own data: photographs as they come (hf_distill.data.images), ground-truth declarations and files
(hf_distill.evaluation.ground_truth), and RGB-D folders and datasets evaluated with the benchmarks' protocol."""

import csv
import json
import math
import shutil

import datasets
import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from conftest import load_file_module
from hf_distill.data.images import displayed_size, open_rgb, to_rgb
from hf_distill.data.views import ViewSampler
from hf_distill.evaluation import evaluate_model, load_model_and_processor
from hf_distill.evaluation.ground_truth import GroundTruthDeclaration, read_ground_truth_file, read_pfm
from hf_distill.evaluation.own_data import load_dataset_samples, load_folder_samples
from hf_distill.testing.photos import PHOTO_CASES, write_pfm, write_phone_photos, write_rgbd_folder

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "evaluate.py"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return root, write_phone_photos(root, panorama_width=1600)


def test_every_photo_opens_as_a_viewer_shows_it(photos):
    root, shown = photos
    assert sorted(shown) == sorted(PHOTO_CASES)
    for name, expected in shown.items():
        if expected is None:
            with pytest.raises(OSError, match="broken.jpg"):
                open_rgb(root / name)
            continue
        image = open_rgb(root / name)
        assert image.mode == "RGB" and image.size == (expected.shape[1], expected.shape[0]), name
        error = np.abs(np.asarray(image, np.float32) - expected).mean()
        assert error < (4.0 if name.endswith(".jpg") else 1e-9), (name, error)
    # Hand-computed: a 16-bit grey value v * 257 reads back as v exactly (not clipped at 255).
    np.testing.assert_array_equal(np.asarray(open_rgb(root / "grey16.png")), shown["grey16.png"])
    portrait = Image.open(root / "portrait_exif6.jpg")
    assert portrait.size == (128, 96) and displayed_size(portrait) == (96, 128)
    twice = to_rgb(to_rgb(portrait))  # the orientation is applied once: safe to apply again
    assert twice.size == (96, 128)


def test_views_are_drawn_on_the_upright_photo(photos, tmp_path):
    """The views of an EXIF-rotated JPEG are those of the same upright pixels stored without EXIF."""
    root, _ = photos
    upright = tmp_path / "upright.png"
    open_rgb(root / "portrait_exif6.jpg").save(upright)
    sampler = ViewSampler(56, 28, num_local_patches=2, min_region=64, seed=0)
    for index in range(3):
        rotated = sampler(Image.open(root / "portrait_exif6.jpg"), epoch=0, index=index)
        plain = sampler(Image.open(upright), epoch=0, index=index)
        np.testing.assert_array_equal(rotated["global_view"], plain["global_view"])
        np.testing.assert_array_equal(rotated["local_views"], plain["local_views"])


def test_declarations_turn_stored_values_into_depth():
    millimetres = np.array([[0, 1000], [2500, 65535]], np.uint16)
    depth, valid = GroundTruthDeclaration(scale=1000).to_depth(millimetres, "a.png")
    np.testing.assert_allclose(depth, [[0, 1.0], [2.5, 65.535]], rtol=1e-6)
    np.testing.assert_array_equal(valid, [[False, True], [True, True]])
    _, valid = GroundTruthDeclaration(scale=1000, max_depth=3.0).to_depth(millimetres, "a.png")
    np.testing.assert_array_equal(valid, [[False, True], [True, False]])
    mask = np.array([[1, 0], [1, 1]], np.uint8)
    _, valid = GroundTruthDeclaration(scale=1000).to_depth(millimetres, "a.png", mask)
    np.testing.assert_array_equal(valid, [[False, False], [True, True]])
    with pytest.raises(ValueError, match=r"a.png: .*--gt_scale"):
        GroundTruthDeclaration().to_depth(millimetres, "a.png")
    with pytest.raises(ValueError, match="a.png: the mask is 1x2 but the ground truth is 2x2"):
        GroundTruthDeclaration(scale=1000).to_depth(millimetres, "a.png", mask[:1])

    stereo = np.array([[np.inf, 2.0], [4.0, 0.0]], np.float32)  # Middlebury: inf unknown, 0 invalid by default
    depth, valid = GroundTruthDeclaration(kind="disparity").to_depth(stereo, "d.pfm")
    np.testing.assert_allclose(depth, [[0, 0.5], [0.25, 0]])
    np.testing.assert_array_equal(valid, [[False, True], [True, False]])
    depth, _ = GroundTruthDeclaration(kind="disparity", focal_baseline=10).to_depth(stereo, "d.pfm")
    np.testing.assert_allclose(depth, [[0, 5.0], [2.5, 0]])
    depth, valid = GroundTruthDeclaration(kind="inverse_depth", invalid_value=None).to_depth(
        np.array([[0.5, -1.0]]), "i.npy")
    np.testing.assert_allclose(depth, [[2.0, 0.0]])
    assert valid.tolist() == [[True, False]]
    disparity_png = np.array([[0, 512]], np.uint16)  # relative disparity: its scale does not matter, none needed
    assert GroundTruthDeclaration(kind="disparity").to_depth(disparity_png, "d.png")[1].tolist() == [[False, True]]

    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        GroundTruthDeclaration().to_depth(np.zeros((2, 2), np.float32), "z.npy")
    with pytest.raises(ValueError, match="unknown ground-truth kind 'normals'"):
        GroundTruthDeclaration(kind="normals")
    with pytest.raises(ValueError, match="needs --gt_kind disparity"):
        GroundTruthDeclaration(focal_baseline=1.0)
    assert GroundTruthDeclaration(kind="disparity").depth_range == (0.0, math.inf)
    assert GroundTruthDeclaration().depth_range == (1e-3, math.inf)


def test_ground_truth_files(tmp_path):
    # A big-endian PFM (positive scale), rows stored bottom-up: the top row comes first once read.
    data = b"Pf\n2 2\n1.0\n" + np.array([[3, 4], [1, 2]], ">f4").tobytes()
    np.testing.assert_array_equal(read_pfm(data), [[1, 2], [3, 4]])
    values = np.array([[1.5, np.inf], [0.25, 7.0]], np.float32)
    write_pfm(tmp_path / "d.pfm", values)
    np.testing.assert_array_equal(read_ground_truth_file((tmp_path / "d.pfm").read_bytes(), "d.pfm"), values)
    with pytest.raises(ValueError, match="x.pfm: not a PFM file"):
        read_ground_truth_file(b"P6\n1 1\n255\n...", "x.pfm")
    with pytest.raises(ValueError, match=r"x.jpg: unknown ground-truth file type '.jpg'"):
        read_ground_truth_file(b"", "x.jpg")
    with pytest.raises(ValueError, match="x.png: unreadable ground truth"):
        read_ground_truth_file(b"not a png", "x.png")
    pytest.importorskip("OpenEXR")
    exr_root = tmp_path / "exr"
    exact = write_rgbd_folder(exr_root, 1, gt_format="exr", scale=1.0, hole_fraction=0.0, portrait=False)
    read = read_ground_truth_file((exr_root / "depth" / "sample_0.exr").read_bytes(), "sample_0.exr")
    np.testing.assert_allclose(read, exact["sample_0"], rtol=1e-6)


@pytest.fixture(scope="module")
def model(assets):
    model, processor = load_model_and_processor(str(assets["student"]))
    return model, processor


def _scores(model, samples, **kwargs):
    summary, rows = evaluate_model(*model, samples, min_depth=samples.min_depth, max_depth=samples.max_depth,
                                   **kwargs)
    return summary, {row["name"]: row for row in rows}


def test_one_scene_in_every_encoding_scores_the_same(model, tmp_path):
    """The same scenes and holes stored as millimetre PNG, float EXR/npy depth, inverse depth and stereo disparity
    (Middlebury .pfm, inf unknown) give the same metrics; relative disparity only changes rmse's unit."""
    common = dict(num_samples=2, size=(48, 64), seed=5)
    write_rgbd_folder(tmp_path / "mm", **common)
    write_rgbd_folder(tmp_path / "npy", gt_format="npy", kind="inverse_depth", scale=1.0, **common)
    write_rgbd_folder(tmp_path / "pfm", gt_format="pfm", kind="disparity", scale=1.0, focal_baseline=30.0,
                      invalid=math.inf, **common)
    reference, _ = _scores(model, load_folder_samples(tmp_path / "mm", GroundTruthDeclaration(scale=1000)))
    assert reference["num_samples"] == 2 and "num_skipped" not in reference
    inverse, _ = _scores(model, load_folder_samples(tmp_path / "npy", GroundTruthDeclaration(kind="inverse_depth")))
    metric = GroundTruthDeclaration(kind="disparity", focal_baseline=30.0, invalid_value=None)
    stereo, _ = _scores(model, load_folder_samples(tmp_path / "pfm", metric))
    relative, _ = _scores(model, load_folder_samples(tmp_path / "pfm", GroundTruthDeclaration(kind="disparity")))
    for name in ("abs_rel", "rmse", "delta1", "log10"):
        # millimetre rounding moves the figures by about 1e-4 at these depths
        assert inverse[name] == pytest.approx(reference[name], rel=2e-3, abs=1e-4), name
        assert stereo[name] == pytest.approx(inverse[name], rel=1e-5, abs=1e-6), name
    for name in ("abs_rel", "delta1", "delta2", "log10", "rmse_log"):
        assert relative[name] == pytest.approx(stereo[name], rel=1e-5, abs=1e-6), name
    assert relative["rmse"] * 30.0 == pytest.approx(stereo["rmse"], rel=1e-5)


def test_sensor_oriented_ground_truth_is_turned_like_its_photo(model, tmp_path):
    write_rgbd_folder(tmp_path / "shown", 1, size=(48, 64), seed=2)  # sample_0: EXIF 6, depth stored as shown
    shutil.copytree(tmp_path / "shown", tmp_path / "sensor")
    path = tmp_path / "sensor" / "depth" / "sample_0.png"
    shown = np.asarray(Image.open(path))
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(path)  # as the sensor stored it
    declaration = GroundTruthDeclaration(scale=1000)
    a = load_folder_samples(tmp_path / "shown", declaration)[0]
    b = load_folder_samples(tmp_path / "sensor", declaration)[0]
    assert a.error is None and b.error is None and a.image.size == (48, 64)
    np.testing.assert_array_equal(a.depth, b.depth)


def test_bad_samples_are_skipped_counted_and_named(model, tmp_path):
    write_rgbd_folder(tmp_path / "data", 2, size=(48, 64), bad=("size", "empty", "unreadable", "missing"))
    samples = load_folder_samples(tmp_path / "data", GroundTruthDeclaration(scale=1000))
    summary, rows = _scores(model, samples, batch_size=3)
    assert summary["num_samples"] == 2 and summary["num_skipped"] == 4
    errors = {name: row.get("error") for name, row in rows.items()}
    assert "ground truth is 46x64 but its image is 48x64" in errors["bad_size"]
    assert "bad_empty.png: no valid ground-truth pixel" in errors["bad_empty"]
    assert "bad_unreadable.png: unreadable ground truth" in errors["bad_unreadable"]
    assert "bad_missing.jpg: no ground truth" in errors["bad_missing"]
    assert all(math.isnan(rows[n]["abs_rel"]) for n in errors if n.startswith("bad"))
    write_rgbd_folder(tmp_path / "good", 2, size=(48, 64))  # the same good samples alone
    good, _ = _scores(model, load_folder_samples(tmp_path / "good", GroundTruthDeclaration(scale=1000)))
    assert summary["abs_rel"] == pytest.approx(good["abs_rel"], rel=1e-9)  # the bad ones changed nothing


def _run(*args: str) -> int:
    """scripts/evaluate.py's main in this process (its parser and outputs, without an interpreter start)."""
    return load_file_module(SCRIPT, "evaluate_script_own").main(list(args))


def test_evaluate_script_on_a_folder_and_a_dataset(assets, tmp_path, capsys):
    data = tmp_path / "site_scans"
    write_rgbd_folder(data, 2, size=(48, 64), seed=1, bad=("size",))
    model_dir = tmp_path / "student"
    shutil.copytree(assets["student"], model_dir)
    out = tmp_path / "out"
    result = _run("--model", str(model_dir), "--benchmark", "folder", "--data_dir", str(data), "--gt_scale", "1000",
                  "--output_json", str(out / "scans.json"), "--update_card")
    assert result == 0, capsys.readouterr().err
    assert "2 (+1 skipped)" in capsys.readouterr().out
    summary = json.loads((out / "scans.json").read_text())
    assert summary["dataset"] == "site_scans" and summary["ground_truth"].startswith("depth, scale 1000")
    assert summary["num_samples"] == 2 and summary["num_skipped"] == 1
    with open(out / "scans_site_scans_samples.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert "46x64" in rows["bad_size"]["error"] and rows["sample_0"]["error"] == ""
    card = ModelCard.load(model_dir / "README.md")
    entries = {(e.dataset_name, e.metric_type): e.metric_value for e in card.data.eval_results}
    assert entries[("site_scans", "abs_rel")] == pytest.approx(summary["abs_rel"], abs=1e-4)

    # The same pairs as a datasets folder (save_to_disk) with a 16-bit depth column and a mask column.
    stems = ["sample_0", "sample_1"]
    masks = [np.ones((64, 48) if stem == "sample_0" else (48, 64), np.uint8) for stem in stems]
    table = datasets.Dataset.from_dict({
        "rgb": [str(data / "images" / f"{s}.jpg") for s in stems],
        "gt": [str(data / "depth" / f"{s}.png") for s in stems],
        "valid": [Image.fromarray(m * 255) for m in masks],
    }).cast_column("rgb", datasets.Image()).cast_column("gt", datasets.Image())
    datasets.DatasetDict({"test": table}).save_to_disk(tmp_path / "scans_dataset")
    result = _run("--model", str(model_dir), "--dataset_name", str(tmp_path / "scans_dataset"), "--image_column",
                  "rgb", "--depth_column", "gt", "--mask_column", "valid", "--gt_scale", "1000", "--output_json",
                  str(out / "dataset.json"))
    assert result == 0, capsys.readouterr().err
    from_dataset = json.loads((out / "dataset.json").read_text())
    assert from_dataset["dataset"] == "scans_dataset" and from_dataset["num_samples"] == 2
    for name in ("abs_rel", "rmse", "delta1"):
        assert from_dataset[name] == pytest.approx(summary[name], rel=1e-6), name


def test_evaluate_script_errors_name_the_problem(assets, tmp_path, capsys):
    script = load_file_module(SCRIPT, "evaluate_script_own")
    model = str(assets["student"])
    assert script.main(["--model", model, "--benchmark", "folder", "--data_dir", str(tmp_path)]) == 1
    assert "expected images/ beside depth/" in capsys.readouterr().err
    write_rgbd_folder(tmp_path / "stereo", 1, size=(48, 64), gt_format="pfm", kind="disparity", scale=1.0)
    argv = ["--model", model, "--benchmark", "folder", "--data_dir", str(tmp_path / "stereo"), "--gt_kind", "disparity"]
    assert script.main([*argv, "--alignment", "depth"]) == 1
    assert "aligned in disparity space" in capsys.readouterr().err
    assert script.main(["--model", model]) == 1
    assert "give --benchmark (with --data_dir) or --dataset_name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([*argv[:-1], "normals"])
    assert "--gt_kind/--gt-kind: invalid choice: 'normals'" in capsys.readouterr().err


def test_dataset_columns_are_checked(tmp_path):
    table = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 6))], "depth": [np.ones((6, 8), np.float32)]})
    table.save_to_disk(tmp_path / "d")
    with pytest.raises(ValueError, match=r"--dataset_name .*no column 'gt'"):
        load_dataset_samples(str(tmp_path / "d"), GroundTruthDeclaration(), depth_column="gt")
    samples = load_dataset_samples(str(tmp_path / "d"), GroundTruthDeclaration())
    sample = samples[0]  # float depth in metres, scale 1: all ones, every pixel valid
    assert sample.error is None and sample.valid.all() and sample.depth.tolist() == np.ones((6, 8)).tolist()


def test_a_list_file_pairs_images_depth_and_masks(tmp_path):
    write_rgbd_folder(tmp_path, 2, size=(48, 64), hole_fraction=0.0, portrait=False)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :32] = 1  # the left half is valid
    Image.fromarray(mask).save(tmp_path / "left.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# image depth mask\nimages/sample_1.jpg depth/sample_1.png left.png\n\n")
    samples = load_folder_samples(tmp_path, GroundTruthDeclaration(scale=1000), split_file=listing)
    assert len(samples) == 1 and samples[0].name == "images/sample_1.jpg"
    np.testing.assert_array_equal(samples[0].valid, mask.astype(bool))
    listing.write_text("images/sample_0.jpg depth/nothing.png\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:1: .*depth/nothing.png not found"):
        load_folder_samples(tmp_path, GroundTruthDeclaration(scale=1000), split_file=listing)
