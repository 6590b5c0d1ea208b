"""Benchmark readers on fixtures written in each benchmark's real layout."""

import tarfile

import numpy as np
import pytest
from PIL import Image

from hf_distill.evaluation import BENCHMARKS, evaluate_depth, load_benchmark
from hf_distill.testing import write_eval_benchmark


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {name: (root / name, write_eval_benchmark(name, root / name, 2, seed=1)) for name in BENCHMARKS}


def _png(path):
    return np.asarray(Image.open(path)).astype(np.float64)


def test_shipped_split_lists_have_the_standard_sizes():
    expected = {"nyu": 654, "kitti": 697, "eth3d": 454, "scannet": 800, "diode": 771}
    for name, spec in BENCHMARKS.items():
        lines = spec.default_split_path.read_text().split("\n")
        assert len([line for line in lines if line.strip()]) == expected[name], name
    kitti = BENCHMARKS["kitti"].default_split_path.read_text().splitlines()
    assert sum(line.split()[1] != "None" for line in kitti) == 652


def test_nyu_units_eigen_crop_and_outside_gt_does_not_matter(tmp_path):
    root = tmp_path / "nyu"
    split = write_eval_benchmark("nyu", root, 1, seed=2)
    samples = load_benchmark("nyu", root, split)
    assert len(samples) == 1
    sample = samples[0]
    rel_depth = split.read_text().split()[1]
    raw = _png(root / rel_depth) / 1000.0
    assert sample.image.size == (640, 480)
    np.testing.assert_allclose(sample.depth, raw, rtol=1e-6)
    outside = np.ones((480, 640), bool)
    outside[45:471, 41:601] = False
    assert not sample.valid[outside].any()
    assert sample.valid[45:471, 41:601].mean() > 0.9  # holes (0) are the only invalid pixels inside
    assert not sample.valid[45:471, 41:601][raw[45:471, 41:601] == 0].any()

    prediction = 1.0 / np.maximum(sample.depth, 0.5) + np.random.default_rng(0).normal(0, 0.05, sample.depth.shape)
    before = evaluate_depth(prediction, sample.depth, sample.valid, min_depth=1e-3, max_depth=10.0)
    # Rewrite the ground truth outside the Eigen crop: metrics must not move.
    values = np.asarray(Image.open(root / rel_depth)).copy()
    values[outside] = 9000
    Image.fromarray(values).save(root / rel_depth)
    changed = load_benchmark("nyu", root, split)[0]
    assert not np.array_equal(changed.depth, sample.depth)
    after = evaluate_depth(prediction, changed.depth, changed.valid, min_depth=1e-3, max_depth=10.0)
    assert after == before


def test_kitti_skips_missing_gt_and_applies_kb_and_eigen_crops(fixtures):
    root, split = fixtures["kitti"]
    lines = split.read_text().splitlines()
    assert len(lines) == 3 and lines[-1].split()[1] == "None"
    samples = load_benchmark("kitti", root, split)
    assert len(samples) == 2
    sample = samples[1]
    rgb_rel, depth_rel = lines[1].split()[:2]
    full_depth = _png(root / depth_rel) / 256.0
    full_image = np.asarray(Image.open(root / rgb_rel))
    assert full_depth.shape == (375, 1242)
    top, left = 375 - 352, (1242 - 1216) // 2  # 23, 13
    np.testing.assert_allclose(sample.depth, full_depth[top:top + 352, left:left + 1216], rtol=1e-6)
    assert np.array_equal(np.asarray(sample.image), full_image[top:top + 352, left:left + 1216])
    eigen = np.zeros((352, 1216), bool)
    eigen[int(0.3324324 * 352):int(0.91351351 * 352), int(0.0359477 * 1216):int(0.96405229 * 1216)] = True
    assert eigen.sum() == (321 - 117) * (1172 - 43)
    expected = eigen & (sample.depth > 1e-5) & (sample.depth < 80)
    assert np.array_equal(sample.valid, expected)
    assert sample.valid.any() and not sample.valid[~eigen].any()


def test_eth3d_raw_float32_with_inf_invalid(tmp_path):
    root = tmp_path / "eth3d"
    split = write_eval_benchmark("eth3d", root, 1, seed=2)
    sample = load_benchmark("eth3d", root, split)[0]
    rgb_rel, depth_rel = split.read_text().splitlines()[0].split()
    raw = np.fromfile(root / depth_rel, dtype="<f4").reshape(sample.depth.shape)
    assert sample.depth.shape == (sample.image.height, sample.image.width)
    assert np.isinf(raw).any()
    assert np.array_equal(sample.valid, np.isfinite(raw) & (raw > 1e-5))
    assert np.isfinite(sample.depth).all()
    # A raw file of the wrong size names the file.
    (root / depth_rel).write_bytes(raw[:-1].tobytes())
    with pytest.raises(ValueError, match=f"{depth_rel}.*expected"):
        load_benchmark("eth3d", root, split)[0]


def test_scannet_millimetres_and_range(fixtures):
    root, split = fixtures["scannet"]
    sample = load_benchmark("scannet", root, split)[1]
    raw = _png(root / split.read_text().splitlines()[1].split()[1]) / 1000.0
    np.testing.assert_allclose(sample.depth, raw, rtol=1e-6)
    assert np.array_equal(sample.valid, (raw > 1e-3) & (raw < 10))
    assert (~sample.valid).any()


def test_diode_uses_the_mask(fixtures):
    root, split = fixtures["diode"]
    sample = load_benchmark("diode", root, split)[0]
    rgb_rel, depth_rel, mask_rel = split.read_text().splitlines()[0].split()
    depth = np.load(root / depth_rel)
    mask = np.load(root / mask_rel).astype(bool)
    assert depth.ndim == 3 and sample.depth.shape == depth.shape[:2]
    assert np.array_equal(sample.valid, mask)  # the fixture's depth is > 0 wherever the mask is set
    assert (~mask).any()
    assert BENCHMARKS["diode"].min_depth == 0.6 and BENCHMARKS["diode"].max_depth == 350


@pytest.mark.parametrize("prefix", ["", "./", "scannet_val/"])
def test_tar_archive_reads_like_the_folder(fixtures, tmp_path, prefix):
    root, split = fixtures["scannet"]
    archive = tmp_path / "scannet.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=prefix + str(path.relative_to(root)))
    from_tar = load_benchmark("scannet", archive, split)
    from_dir = load_benchmark("scannet", root, split)
    assert len(from_tar) == len(from_dir) == 2
    for a, b in zip(from_tar, from_dir):
        assert a.name == b.name
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.valid, b.valid)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_missing_files_and_bad_lines_name_file_and_line(fixtures, tmp_path):
    root, split = fixtures["diode"]
    lines = split.read_text().splitlines()
    bad = tmp_path / "list.txt"
    bad.write_text(lines[0] + "\n" + lines[1].replace("_depth_mask.npy", "_mask.npy") + "\n")
    with pytest.raises(FileNotFoundError, match=r"_mask\.npy not found \(listed on line 2 of .*list\.txt\)"):
        load_benchmark("diode", root, bad)
    bad.write_text(lines[0].rsplit(" ", 1)[0] + "\n")
    with pytest.raises(ValueError, match=r"list\.txt:1: expected 3 relative paths"):
        load_benchmark("diode", root, bad)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_benchmark("diode", tmp_path / "nowhere", split)
    with pytest.raises(ValueError, match="unknown benchmark 'middlebury'"):
        load_benchmark("middlebury", root)


def test_max_samples_and_select(fixtures):
    root, split = fixtures["nyu"]
    samples = load_benchmark("nyu", root, split, max_samples=1)
    assert len(samples) == 1
    both = load_benchmark("nyu", root, split)
    assert both.select([1])[0].name == both[1].name != both[0].name


def test_split_comments_and_blank_lines_are_skipped_and_errors_keep_the_file_line(fixtures, tmp_path):
    root, split = fixtures["diode"]
    first, second = split.read_text().splitlines()[:2]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# DIODE, two samples\n\n{first}\n   # indented comment\n{second}\n")
    samples = load_benchmark("diode", root, listing)
    assert [s.name for s in samples] == [first.split()[0], second.split()[0]]
    listing.write_text(f"# header\n\n{first}\n{second.rsplit(' ', 1)[0]}\n")
    with pytest.raises(ValueError, match=r"list\.txt:4: expected 3 relative paths"):
        load_benchmark("diode", root, listing)
    with pytest.raises(FileNotFoundError, match=r"split file .*absent\.txt not found"):
        load_benchmark("diode", root, tmp_path / "absent.txt")
