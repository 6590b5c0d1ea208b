"""The on-disk layouts of generated scenes (hf_distill.testing), read back in their real units."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from hf_distill.evaluation import BENCHMARKS
from hf_distill.testing import (
    scene_for,
    write_eval_benchmark,
    write_image_folder,
    write_nyu_csv_layout,
    write_webdataset_shards,
)

SMALL = (24, 32)


def test_nyu_csv_layout_units(tmp_path):
    root = write_nyu_csv_layout(tmp_path / "nyu", num_train=2, num_test=1, size=SMALL, seed=3)
    assert (root / "nyu2_train.csv").read_text().splitlines() == [
        "data/nyu2_train/00001_colors.png,data/nyu2_train/00001_depth.png",
        "data/nyu2_train/00002_colors.png,data/nyu2_train/00002_depth.png",
    ]
    assert (root / "nyu2_test.csv").read_text().splitlines() == [
        "data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png"]
    train = np.asarray(Image.open(root / "nyu2_train/00002_depth.png"))
    truth = scene_for(3, "nyu_train", 1, SMALL)
    assert train.dtype == np.uint8
    np.testing.assert_allclose(train / 255.0 * 10.0, np.minimum(truth.depth, 10.0), atol=10 / 255 / 2 + 1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "nyu2_train/00002_colors.png")), truth.image)
    test = np.asarray(Image.open(root / "nyu2_test/00000_depth.png"))
    assert test.dtype == np.uint16
    np.testing.assert_allclose(test / 1000.0, scene_for(3, "nyu_test", 0, SMALL).depth, atol=5e-4 + 1e-6)


@pytest.mark.parametrize("ext,nested", [("jpg", True), ("png", False), ("webp", True)])
def test_image_folder(tmp_path, ext, nested):
    root = write_image_folder(tmp_path / "imgs", num_images=4, size=SMALL, ext=ext, nested=nested)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) == 4 and all(p.suffix == f".{ext}" for p in files)
    assert any(len(p.relative_to(root).parts) > 1 for p in files) == nested
    assert Image.open(files[0]).size == (SMALL[1], SMALL[0])


def test_image_folder_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="gif"):
        write_image_folder(tmp_path, ext="gif")


def test_webdataset_shards(tmp_path):
    shards = write_webdataset_shards(tmp_path, num_shards=2, per_shard=2, size=SMALL, seed=1)
    assert [p.name for p in shards] == ["sa_000000.tar", "sa_000001.tar"]
    with tarfile.open(shards[1]) as tar:
        assert tar.getnames() == ["sa_3.jpg", "sa_3.json", "sa_4.jpg", "sa_4.json"]
        meta = json.loads(tar.extractfile("sa_4.json").read())
        image = Image.open(io.BytesIO(tar.extractfile("sa_4.jpg").read()))
    assert meta["image"]["file_name"] == "sa_4.jpg" and meta["image"]["image_id"] == 4
    assert image.format == "JPEG" and image.size == (SMALL[1], SMALL[0])


def _lines(split_file):
    return [line.split() for line in split_file.read_text().splitlines()]


def test_eval_nyu(tmp_path):
    split = write_eval_benchmark("nyu", tmp_path, num_samples=2, size=SMALL, seed=2)
    assert split.name == "nyu_depth_labeled_filename_list_test.txt"
    rows = _lines(split)
    assert len(rows) == 2 and rows[0][0].startswith("test/") and rows[0][0].split("/")[-1] == "rgb_0001.png"
    for i, (rgb, raw, filled) in enumerate(rows):
        truth = np.minimum(scene_for(2, "nyu", i, SMALL).depth, 10.0)
        raw_mm = np.asarray(Image.open(tmp_path / raw))
        filled_mm = np.asarray(Image.open(tmp_path / filled))
        assert raw_mm.dtype == np.uint16 and filled_mm.min() > 0
        assert 0 < np.mean(raw_mm == 0) < 0.2  # sensor holes in the raw map only
        np.testing.assert_allclose(filled_mm / 1000.0, truth, atol=5e-4 + 1e-6)
        np.testing.assert_array_equal(raw_mm[raw_mm > 0], filled_mm[raw_mm > 0])
        assert Image.open(tmp_path / rgb).size == (SMALL[1], SMALL[0])


def test_eval_kitti_default_size_sparse_and_none_line(tmp_path):
    split = write_eval_benchmark("kitti", tmp_path, num_samples=1, seed=0)
    rows = _lines(split)
    assert len(rows) == 2 and rows[1][1] == "None"
    rgb, gt, focal = rows[0]
    assert rgb == "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000000.png"
    assert gt == "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000000.png"
    truth = scene_for(0, "kitti", 0, (375, 1242))
    assert float(focal) == pytest.approx(truth.focal, abs=1e-4)
    values = np.asarray(Image.open(tmp_path / gt))
    assert values.shape == (375, 1242) and values.dtype == np.uint16
    valid = values > 0
    assert 0.02 < valid.mean() < 0.1 and not valid[: 375 // 3].any()
    np.testing.assert_allclose(values[valid] / 256.0, truth.depth[valid], atol=1 / 512 + 1e-6)
    assert (tmp_path / rows[1][0]).is_file()


def test_eval_eth3d_raw_float32_with_inf(tmp_path):
    split = write_eval_benchmark("eth3d", tmp_path, num_samples=1, size=SMALL, seed=0)
    (rgb, gt), = _lines(split)
    assert rgb == "rgb/office/images/dslr_images/DSC_0001.JPG"
    assert gt == "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0001.JPG"
    width, height = Image.open(tmp_path / rgb).size
    depth = np.fromfile(tmp_path / gt, dtype="<f4").reshape(height, width)
    finite = np.isfinite(depth)
    assert 0 < (~finite).mean() < 0.3 and np.all(np.isposinf(depth[~finite]))
    np.testing.assert_array_equal(depth[finite], scene_for(0, "eth3d", 0, SMALL).depth[finite])


def test_eval_scannet_mm(tmp_path):
    split = write_eval_benchmark("scannet", tmp_path, num_samples=1, size=SMALL, seed=0)
    (rgb, gt), = _lines(split)
    assert rgb.split("/")[1:] == ["color", "000100.jpg"] and gt.split("/")[1:] == ["depth", "000100.png"]
    values = np.asarray(Image.open(tmp_path / gt))
    valid = values > 0
    np.testing.assert_allclose(values[valid] / 1000.0, scene_for(0, "scannet", 0, SMALL).depth[valid], atol=5e-4 + 1e-6)


def test_eval_diode_npy_and_mask(tmp_path):
    split = write_eval_benchmark("diode", tmp_path, num_samples=2, size=SMALL, seed=0)
    rows = _lines(split)
    assert rows[0][0].startswith("indoors/") and rows[1][0].startswith("outdoor/")
    rgb, depth_file, mask_file = rows[0]
    assert depth_file == rgb[:-4] + "_depth.npy" and mask_file == rgb[:-4] + "_depth_mask.npy"
    depth, mask = np.load(tmp_path / depth_file), np.load(tmp_path / mask_file)
    assert depth.shape == (*SMALL, 1) and depth.dtype == np.float32 and mask.shape == SMALL
    valid = mask > 0
    assert 0 < (~valid).mean() < 0.2 and np.all(depth[..., 0][~valid] == 0)
    np.testing.assert_array_equal(depth[..., 0][valid], scene_for(0, "diode", 0, SMALL).depth[valid])


def test_eval_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="middlebury"):
        write_eval_benchmark("middlebury", tmp_path)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_eval_split_list_is_named_like_the_shipped_one(tmp_path, name):
    size = (360, 1220) if name == "kitti" else SMALL  # KITTI's reader needs room for its 352x1216 crop
    split = write_eval_benchmark(name, tmp_path, num_samples=1, size=size, seed=0)
    assert split == tmp_path / BENCHMARKS[name].default_split_path.name
    assert BENCHMARKS[name].default_split_path.is_file()
