"""Cross-context views: geometry against coordinate ramps, patch sizes, reproducibility, draft decoding,
broken files, collation."""

import io
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_distill.data.collate import collate_views
from hf_distill.data.sources import load_images, load_nyu, load_webdataset
from hf_distill.data.views import ViewDataset, ViewSampler, build_view_dataset, IterableViewDataset
from hf_distill.testing import write_nyu_csv_layout, write_webdataset_shards

H, W = 200, 240


def _ramp_image():
    """R = x, G = y (exact up to 255): every pixel names its own coordinates."""
    y, x = np.mgrid[0:H, 0:W]
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


def _ramp_depth():
    y, x = np.mgrid[0:H, 0:W]
    return (1.0 + x + 1000.0 * y).astype(np.float32)


def _expected_ramp(start, side, out):
    """Ramp value at the centres of `out` output pixels resampling source pixels [start, start + side)."""
    return start + (np.arange(out) + 0.5) * side / out - 0.5


def _interior(a, k=2):
    return a[k:-k, k:-k]


@pytest.mark.parametrize("index", range(4))
def test_views_contain_the_pixels_their_boxes_say(index):
    sampler = ViewSampler(global_crop_size=28, local_crop_size=56, num_local_patches=3, min_region=100)
    out = sampler(_ramp_image(), _ramp_depth(), epoch=1, index=index)
    geom = sampler.sample_geometry(W, H, epoch=1, index=index)
    S = out["region_size"]
    assert S == geom.size and 100 <= S <= H
    np.testing.assert_array_equal(out["boxes"], geom.boxes)

    # Global view: the region downsampled; R and G reproduce the source coordinates of each pixel centre.
    g = out["global_view"] * 255
    gx = _expected_ramp(geom.x0, S, 28)
    gy = _expected_ramp(geom.y0, S, 28)
    np.testing.assert_allclose(_interior(g[0]), _interior(np.broadcast_to(gx, (28, 28))), atol=1.0)
    np.testing.assert_allclose(_interior(g[1]), _interior(np.broadcast_to(gy[:, None], (28, 28))), atol=1.0)

    # Depth: nearest source pixel of each centre, exactly.
    cols = geom.x0 + np.floor((np.arange(28) + 0.5) * S / 28).astype(int)
    rows = geom.y0 + np.floor((np.arange(28) + 0.5) * S / 28).astype(int)
    np.testing.assert_array_equal(out["depth"], 1.0 + cols[None, :] + 1000.0 * rows[:, None])
    assert out["depth_valid"].all()

    for patch, (bx0, by0, bx1, by1) in zip(out["local_views"] * 255, out["boxes"]):
        p = bx1 - bx0
        assert by1 - by0 == p and 0 <= bx0 and 0 <= by0 and bx1 <= S and by1 <= S and p < S
        px = _expected_ramp(geom.x0 + bx0, p, 56)
        py = _expected_ramp(geom.y0 + by0, p, 56)
        np.testing.assert_allclose(_interior(patch[0]), _interior(np.broadcast_to(px, (56, 56))), atol=1.0)
        np.testing.assert_allclose(_interior(patch[1]), _interior(np.broadcast_to(py[:, None], (56, 56))), atol=1.0)


def test_global_boxes_cover_the_same_content_as_patches():
    # Regions under 2G: no integer pre-reduction, whose 8-bit rounding would bias ramp values by up to 0.5.
    image = _ramp_image().crop((0, 0, W, 110))
    sampler = ViewSampler(global_crop_size=56, local_crop_size=28, num_local_patches=4, min_region=60)
    for index in range(3):
        batch = collate_views([sampler(image, epoch=0, index=index)])
        g, patches, boxes = batch["global_view"], batch["local_views"][0], batch["global_boxes"][0]
        for patch, box in zip(patches, boxes):
            # Sample the global view at the patch's pixel centres, as the local-global loss does.
            centres = (torch.arange(28) + 0.5) / 28
            xs = box[0] + centres * (box[2] - box[0])
            ys = box[1] + centres * (box[3] - box[1])
            grid = torch.stack(torch.meshgrid(xs / 56 * 2 - 1, ys / 56 * 2 - 1, indexing="xy"), -1)
            crop = F.grid_sample(g, grid[None], mode="bilinear", align_corners=False)[0]
            diff = (crop[:2] - patch[:2]).abs()[:, 3:-3, 3:-3] * 255
            assert diff.max() < 1.5 and diff.mean() < 0.35  # a one-pixel shift costs 1 level everywhere


def test_patches_strictly_smaller_than_region_on_nyu_sized_images():
    sampler = ViewSampler()  # paper defaults: G = L = 560, min_region 644 > 480
    sides = []
    for index in range(200):
        geom = sampler.sample_geometry(640, 480, epoch=0, index=index)
        assert geom.size == 480
        p = geom.boxes[:, 2] - geom.boxes[:, 0]
        assert np.all(p < geom.size) and np.all(p >= 240) and np.all(p <= 420)
        assert np.all(geom.boxes[:, :2] >= 0) and np.all(geom.boxes[:, 2:] <= geom.size)
        sides.extend(p.tolist())
    assert len(set(sides)) > 50  # patch scale varies
    out = sampler(Image.new("RGB", (640, 480)), epoch=0, index=0)
    assert out["global_view"].shape == (3, 560, 560) and out["local_views"].shape == (2, 3, 560, 560)


@pytest.mark.parametrize("width,height", [(2250, 1500), (1500, 1000)])
def test_paper_regime_patches_are_native_resolution_on_large_images(width, height):
    # SA-1B-sized images: every region (644 to the short side) holds floor(7/8 S) >= 563 >= L = 560 pixels,
    # so every patch is exactly L source pixels and the teacher sees it at native resolution.
    sampler = ViewSampler()
    for index in range(200):
        geom = sampler.sample_geometry(width, height, epoch=3, index=index)
        assert 644 <= geom.size <= height
        assert np.all(geom.boxes[:, 2] - geom.boxes[:, 0] == 560)
        assert np.all(geom.boxes[:, 3] - geom.boxes[:, 1] == 560)
        assert np.all(geom.boxes[:, :2] >= 0) and np.all(geom.boxes[:, 2:] <= geom.size)


@pytest.mark.parametrize("side,expected", [(64, {56}), (65, {56}), (63, set(range(32, 56)))])
def test_patch_side_is_l_exactly_when_the_region_holds_it(side, expected):
    # L = 56: floor(7/8 * 64) = 56 >= L gives p = 56 only; floor(7/8 * 63) = 55 < L keeps today's range
    # [ceil(63 / 2), 55] = [32, 55].
    sampler = ViewSampler(global_crop_size=56, local_crop_size=56, num_local_patches=8, min_region=side)
    sides = set()
    for index in range(100):
        geom = sampler.sample_geometry(side, side, epoch=0, index=index)
        assert geom.size == side
        sides.update((geom.boxes[:, 2] - geom.boxes[:, 0]).astype(int).tolist())
    assert sides == expected


def test_min_local_crop_bounds_patch_side():
    sampler = ViewSampler(global_crop_size=56, local_crop_size=56, num_local_patches=8, min_region=50,
                          min_local_crop=30)
    for index in range(50):
        geom = sampler.sample_geometry(100, 80, epoch=0, index=index)
        p = geom.boxes[:, 2] - geom.boxes[:, 0]
        assert np.all(p >= min(30, int(7 / 8 * geom.size))) and np.all(p <= min(56, int(7 / 8 * geom.size)))


def test_reproducible_per_seed_epoch_index():
    image = _ramp_image()
    sampler = ViewSampler(global_crop_size=28, local_crop_size=28, min_region=60)
    a = sampler(image, epoch=2, index=5)
    b = ViewSampler(global_crop_size=28, local_crop_size=28, min_region=60)(image, epoch=2, index=5)
    for key in ("global_view", "local_views", "boxes"):
        np.testing.assert_array_equal(a[key], b[key])
    geoms = {(e, i, s): ViewSampler(min_region=60, seed=s).sample_geometry(W, H, epoch=e, index=i)
             for e, i, s in [(2, 5, 0), (3, 5, 0), (2, 6, 0), (2, 5, 1)]}
    keys = [(g.x0, g.y0, g.size, g.boxes.tobytes()) for g in geoms.values()]
    assert len(set(keys)) == 4


@pytest.mark.parametrize("flag,kwargs", [("--global_crop_size", {"global_crop_size": 500}),
                                         ("--local_crop_size", {"local_crop_size": 100}),
                                         ("--local_crop_size", {"local_crop_size": 0}),
                                         ("--min_local_crop", {"min_local_crop": 0}),
                                         ("--min_region", {"min_region": 1})])
def test_invalid_sizes_rejected_naming_the_flag(flag, kwargs):
    with pytest.raises(ValueError, match=flag):
        ViewSampler(**kwargs)


def _wave_jpeg(width=1800, height=1200):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255.0 / width, 127.5 + 127.5 * np.sin(2 * np.pi * y / 128),
                    127.5 + 127.5 * np.sin(2 * np.pi * x / 128)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


@pytest.mark.parametrize("global_crop_size,scale", [(56, 8), (280, 4)])
def test_draft_decoding_matches_full_decoding_geometry(global_crop_size, scale):
    # Patches are at most L source pixels (native resolution), so only global-only views can be drafted.
    data = _wave_jpeg()
    full = Image.open(io.BytesIO(data)).convert("RGB")
    sampler = ViewSampler(global_crop_size=global_crop_size, num_local_patches=0,
                          min_region=600 if scale == 8 else 1120)
    G = global_crop_size
    for index in range(2):
        image = Image.open(io.BytesIO(data))
        view = sampler(image, epoch=0, index=index)["global_view"] * 255
        assert image.size == (1800 // scale, 1200 // scale)  # decoded at reduced size
        geom = sampler.sample_geometry(1800, 1200, epoch=0, index=index)
        x0, y0, S = geom.x0, geom.y0, geom.size

        def error(dx, dy, channel):
            """Mean difference to the full-resolution view of the region shifted by (dx, dy) source pixels."""
            box = (x0 + dx, y0 + dy, x0 + dx + S, y0 + dy + S)
            ref = np.asarray(full.resize((G, G), Image.BILINEAR, box=box), np.float32)[..., channel]
            return np.abs(view[channel] - ref).mean()

        # Waves along x (blue) and y (green): the full-resolution region fits best without any shift,
        # i.e. the drafted view covers exactly the same source pixels.
        x_shifts = [d for d in (-1, 1) if 0 <= x0 + d and x0 + d + S <= 1800]
        y_shifts = [d for d in (-1, 1) if 0 <= y0 + d and y0 + d + S <= 1200]
        assert error(0, 0, 2) < min(error(d, 0, 2) for d in x_shifts)
        assert error(0, 0, 1) < min(error(0, d, 1) for d in y_shifts)
        assert error(0, 0, 2) < 4.0


def test_no_draft_when_patches_need_native_pixels():
    image = Image.open(io.BytesIO(_wave_jpeg()))
    ViewSampler(global_crop_size=56, local_crop_size=56, min_region=1120)(image, epoch=0, index=0)
    assert image.size == (1800, 1200)


def _broken_folder(tmp_path):
    good = Image.fromarray(np.full((40, 50, 3), 90, np.uint8))
    good.save(tmp_path / "a_good.jpg")
    (tmp_path / "b_garbage.jpg").write_bytes(b"this is not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "c_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    good.save(tmp_path / "d_good.png")
    return tmp_path


def test_broken_images_skipped_counted_and_named(tmp_path, caplog):
    views = ViewDataset(load_images(_broken_folder(tmp_path)), ViewSampler(global_crop_size=14, local_crop_size=14))
    with caplog.at_level(logging.WARNING, logger="hf_distill.data.views"):
        samples = [views[i] for i in range(4)]
    assert [s["skipped"] for s in samples] == [0, 2, 1, 0]
    assert "b_garbage.jpg" in caplog.text and "c_truncated.jpg" in caplog.text
    assert all(s["global_view"].std() < 1e-6 and s["global_view"].mean() > 0.3 for s in samples)


def test_broken_webdataset_member_skipped_and_counted(tmp_path, caplog):
    import tarfile

    good = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(good, "JPEG")
    with tarfile.open(tmp_path / "sa_000000.tar", "w") as tar:
        for n, data in ((1, good.getvalue()), (2, b"junk!"), (3, good.getvalue())):
            for name, payload in ((f"sa_{n}.jpg", data), (f"sa_{n}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    source = load_webdataset(tmp_path, shuffle_buffer=0)
    with caplog.at_level(logging.WARNING, logger="hf_distill.data.views"):
        samples = list(build_view_dataset(source, ViewSampler(global_crop_size=14, local_crop_size=14)))
    assert [s["skipped"] for s in samples] == [0, 1]
    assert "sa_000000.tar:sa_2" in caplog.text


def test_depth_size_mismatch_names_both_files(tmp_path):
    root = write_nyu_csv_layout(tmp_path, num_train=1, num_test=0, size=(20, 30))
    Image.fromarray(np.full((10, 30), 50, np.uint8)).save(root / "nyu2_train/00001_depth.png")
    views = build_view_dataset(load_nyu(root), ViewSampler(global_crop_size=14, local_crop_size=14))
    with pytest.raises(ValueError, match=r"00001_depth\.png.*00001_colors\.png"):
        views[0]


def test_nyu_views_with_depth_and_epochs(tmp_path):
    root = write_nyu_csv_layout(tmp_path, num_train=2, num_test=0, size=(48, 64))
    views = build_view_dataset(load_nyu(root), ViewSampler(global_crop_size=28, local_crop_size=28))
    assert isinstance(views, ViewDataset) and len(views) == 2
    first = views[1]
    assert first["depth"].shape == (28, 28) and first["depth_valid"].all()
    assert 0.2 < first["depth"].min() and first["depth"].max() <= 10.0
    views.set_epoch(1)
    assert not np.array_equal(views[1]["local_views"], first["local_views"])


def test_invalid_depth_stays_invalid():
    depth = _ramp_depth()
    depth[:, : W // 2] = 0.0
    depth[: H // 2, W // 2:] = np.inf
    out = ViewSampler(global_crop_size=28, local_crop_size=28, min_region=H)(_ramp_image(), depth, epoch=0, index=0)
    assert not out["depth_valid"][:, :10].any() and not out["depth_valid"][:10].any()
    assert out["depth_valid"][-5:, -5:].all()
    np.testing.assert_array_equal(out["depth"][~out["depth_valid"]], 0.0)


def test_collate_shapes_and_global_boxes():
    sampler = ViewSampler(global_crop_size=28, local_crop_size=14, num_local_patches=3, min_region=60)
    samples = [sampler(_ramp_image(), _ramp_depth(), epoch=0, index=i) for i in range(2)]
    samples[1]["skipped"] = 4
    batch = collate_views(samples)
    assert batch["global_view"].shape == (2, 3, 28, 28) and batch["local_views"].shape == (2, 3, 3, 14, 14)
    assert batch["boxes"].shape == (2, 3, 4) and batch["region_size"].tolist() == [s["region_size"] for s in samples]
    expected = torch.as_tensor(samples[1]["boxes"]) * 28 / samples[1]["region_size"]
    torch.testing.assert_close(batch["global_boxes"][1], expected)
    assert batch["skipped"].dtype == torch.long and batch["skipped"].tolist() == [0, 4]
    assert batch["depth"].shape == (2, 28, 28) and batch["depth_valid"].dtype == torch.bool
    del samples[0]["depth"]
    with pytest.raises(ValueError, match="depth"):
        collate_views(samples)


def test_iterable_views_and_set_epoch(tmp_path):
    write_webdataset_shards(tmp_path, num_shards=2, per_shard=1, size=(30, 40))
    views = build_view_dataset(load_webdataset(tmp_path), ViewSampler(global_crop_size=14, local_crop_size=14))
    assert isinstance(views, IterableViewDataset)
    first = [s["boxes"].tobytes() for s in views]
    views.set_epoch(1)
    assert len(first) == 2 and [s["boxes"].tobytes() for s in views] != first


def test_dataloader_workers_with_collate(tmp_path):
    root = write_nyu_csv_layout(tmp_path, num_train=4, num_test=0, size=(30, 40))
    views = build_view_dataset(load_nyu(root), ViewSampler(global_crop_size=14, local_crop_size=14))
    loader = torch.utils.data.DataLoader(views, batch_size=2, num_workers=2, collate_fn=collate_views)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["depth"].shape == (2, 14, 14)
    assert batches[1]["global_boxes"].shape == (2, 2, 4)
