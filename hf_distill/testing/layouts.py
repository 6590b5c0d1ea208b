"""Generated scenes laid out exactly as the real datasets are stored (units included): fixtures for the tests,
the demo and the benchmarks, which then exercise the same readers as real data; nothing is downloaded.

Training sources: :func:`write_nyu_csv_layout` (DenseDepth NYU), :func:`write_image_folder`,
:func:`write_webdataset_shards` (SA-1B tars). Evaluation benchmarks: :func:`write_eval_benchmark` (the Marigold
layouts read by ``hf_distill.evaluation.benchmarks``, split lists named as in its ``BENCHMARKS`` table).
Every sample is :func:`scene_for` its writer, seed and index, so a test can compare what it reads back with the
exact depth.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from hf_distill.data.sources import IMAGE_EXTENSIONS
from hf_distill.data.synthetic import SyntheticScene, render_scene
from hf_distill.evaluation.benchmarks import BENCHMARKS

_SCENE_TAGS = {"nyu_train": 1, "nyu_test": 2, "images": 3, "webdataset": 4, "nyu": 5, "kitti": 6, "eth3d": 7,
               "scannet": 8, "diode": 9}

# File extension (no dot) -> PIL format, for every extension the image-folder source reads.
_IMAGE_FORMATS = {ext[1:]: Image.registered_extensions()[ext] for ext in IMAGE_EXTENSIONS}


def scene_for(seed: int, tag: str, index: int, size: tuple[int, int]) -> SyntheticScene:
    """The scene of sample ``index`` of a writer (``tag``: nyu_train, nyu_test, images, webdataset or a benchmark
    name): independent of the other samples and of the writer's counts. ``size`` is (H, W)."""
    scene_seed = int(np.random.SeedSequence([seed, _SCENE_TAGS[tag], index]).generate_state(1)[0])
    return render_scene(scene_seed, int(size[0]), int(size[1]))


def _save_rgb(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _IMAGE_FORMATS[path.suffix[1:].lower()]
    Image.fromarray(image).save(path, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))


def _jpeg(image: np.ndarray, size: tuple[int, int]) -> bytes:
    """``image`` (h, w, 3) uint8 resized to ``size`` (H, W) (bicubic) when it differs, as JPEG bytes of quality 90."""
    picture = Image.fromarray(image)
    if picture.size != (size[1], size[0]):
        picture = picture.resize((int(size[1]), int(size[0])), Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _save_uint16_png(values: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def _holes(shape: tuple[int, int], rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Blob-shaped boolean mask covering about `fraction` of the pixels (sensor dropouts)."""
    h, w = shape
    coarse = rng.random((max(4, h // 16), max(4, w // 16))).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR)) + 1e-3 * rng.random((h, w))
    return field > np.quantile(field, 1.0 - fraction)


def _millimetres(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)


def write_nyu_csv_layout(root: str | Path, num_train: int = 4, num_test: int = 2, *,
                         size: tuple[int, int] = (480, 640), seed: int = 0) -> Path:
    """DenseDepth NYU layout under `root`; returns `root`.

    root/nyu2_train/00001_colors.png + 00001_depth.png (8-bit, value = round(metres / 10 * 255)),
    root/nyu2_test/00000_colors.png + 00000_depth.png (16-bit millimetres), and nyu2_train.csv /
    nyu2_test.csv with lines `data/nyu2_train/00001_colors.png,data/nyu2_train/00001_depth.png`
    (the `data/` prefix of the real CSVs, while the files sit directly in `root`).
    """
    root = Path(root)
    for split, count, first in (("train", num_train, 1), ("test", num_test, 0)):
        folder = root / f"nyu2_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            scene = scene_for(seed, f"nyu_{split}", i, size)
            stem = f"{i + first:05d}"
            _save_rgb(scene.image, folder / f"{stem}_colors.png")
            if split == "train":
                values = np.clip(np.round(scene.depth / 10.0 * 255.0), 1, 255).astype(np.uint8)
                Image.fromarray(values).save(folder / f"{stem}_depth.png")
            else:
                _save_uint16_png(_millimetres(scene.depth), folder / f"{stem}_depth.png")
            lines.append(f"data/nyu2_{split}/{stem}_colors.png,data/nyu2_{split}/{stem}_depth.png\n")
        (root / f"nyu2_{split}.csv").write_text("".join(lines))
    return root


def write_image_folder(root: str | Path, num_images: int = 4, *, size: tuple[int, int] = (480, 640),
                       seed: int = 0, ext: str = "jpg", nested: bool = True) -> Path:
    """Unlabelled images under `root` (in `room_k/view_j/` sub-folders when nested); returns `root`."""
    if ext.lower() not in _IMAGE_FORMATS:
        raise ValueError(f"ext must be one of {sorted(_IMAGE_FORMATS)}, got {ext!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        sub = Path(f"room_{i % 3}") / f"view_{i % 2}" if nested else Path()
        _save_rgb(scene_for(seed, "images", i, size).image, root / sub / f"img_{i:05d}.{ext}")
    return root


def write_webdataset_shards(root: str | Path, num_shards: int = 2, per_shard: int = 3, *,
                            size: tuple[int, int] = (480, 640), seed: int = 0, distinct: int | None = None,
                            annotations: int = 0) -> list[Path]:
    """SA-1B-style shards root/sa_000000.tar ... holding `sa_N.jpg` + `sa_N.json` per image (N from 1).

    ``distinct``: None renders every image at ``size``; N renders N scenes at a quarter of ``size`` (sides at least
    16), enlarged (bicubic) and used in turn, which is fast at SA-1B's sizes. ``annotations``: mask annotations in
    each json (a 2000-character RLE each: SA-1B's are what the loader must skip).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shared = [_jpeg(render_scene(i, max(16, size[0] // 4), max(16, size[1] // 4)).image, size)
              for i in range(distinct or 0)]
    rle = {"size": [int(size[0]), int(size[1])], "counts": "x" * 2000}
    shards = []
    for k in range(num_shards):
        path = root / f"sa_{k:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for j in range(per_shard):
                n = k * per_shard + j + 1
                jpeg = shared[n % distinct] if distinct else _jpeg(scene_for(seed, "webdataset", n, size).image, size)
                meta = {"image": {"image_id": n, "width": int(size[1]), "height": int(size[0]),
                                  "file_name": f"sa_{n}.jpg"},
                        "annotations": [{"id": m, "segmentation": rle} for m in range(annotations)]}
                for name, data in ((f"sa_{n}.jpg", jpeg), (f"sa_{n}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards


def write_eval_benchmark(name: str, root: str | Path, num_samples: int = 3, *, seed: int = 0,
                         size: tuple[int, int] | None = None) -> Path:
    """Write an evaluation benchmark in its real on-disk layout and units; returns the split list path.

    The split list (root/<BENCHMARKS[name].split_file>) uses the same line format as hf_distill's packaged
    lists. Layouts, with `size` = (H, W) defaulting to the real size or a small one of the same shape:
      nyu     test/<scene>/rgb_NNNN.png, depth_NNNN.png (uint16 mm, 0 = hole), filled_NNNN.png (no holes)
      kitti   <date>/<drive>/image_02/data/N.png + <drive>/proj_depth/groundtruth/image_02/N.png
              (uint16 metres*256, sparse LiDAR-like, 0 = invalid), focal column; one extra line whose
              ground truth is `None` (num_samples + 1 lines)
      eth3d   rgb/<scene>/images/dslr_images/DSC_N.JPG + depth/<scene>_dslr_depth/<scene>/ground_truth_depth/
              dslr_images/DSC_N.JPG (raw little-endian float32 of the image's (H, W), inf = invalid)
      scannet <scene>/color/N.jpg + <scene>/depth/N.png (uint16 mm, 0 = invalid)
      diode   indoors|outdoor/scene_X/scan_Y/name.png + name_depth.npy (float32 (H, W, 1), 0 where invalid)
              + name_depth_mask.npy (float32 (H, W), 1 = valid)
    """
    if name not in _SAMPLE_WRITERS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(_SAMPLE_WRITERS)}")
    write_sample, default_size = _SAMPLE_WRITERS[name]
    size = tuple(size) if size is not None else default_size
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _SCENE_TAGS[name]])
    lines = []
    for i in range(num_samples):
        scene = scene_for(seed, name, i, size)
        lines.append(write_sample(root, i, scene, rng))
    if name == "kitti":  # the Eigen list has images without ground truth
        scene = scene_for(seed, name, num_samples, size)
        rgb = lines[0].split()[0].rsplit("/", 1)[0] + f"/{num_samples:010d}.png"
        _save_rgb(scene.image, root / rgb)
        lines.append(f"{rgb} None {scene.focal:.4f}")
    split = root / BENCHMARKS[name].split_file
    split.write_text("\n".join(lines) + "\n")
    return split


def _write_nyu_sample(root: Path, i: int, scene: SyntheticScene, rng: np.random.Generator) -> str:
    folder = f"test/{('kitchen', 'office', 'bedroom')[i % 3]}_{i // 3 + 1:04d}"
    n = f"{i + 1:04d}"
    filled = _millimetres(np.minimum(scene.depth, 10.0))
    raw = filled.copy()
    raw[_holes(raw.shape, rng, 0.05)] = 0
    _save_rgb(scene.image, root / folder / f"rgb_{n}.png")
    _save_uint16_png(raw, root / folder / f"depth_{n}.png")
    _save_uint16_png(filled, root / folder / f"filled_{n}.png")
    return f"{folder}/rgb_{n}.png {folder}/depth_{n}.png {folder}/filled_{n}.png"


def _write_kitti_sample(root: Path, i: int, scene: SyntheticScene, rng: np.random.Generator) -> str:
    drive = "2011_09_26_drive_0002_sync"
    rgb = f"2011_09_26/{drive}/image_02/data/{i:010d}.png"
    gt = f"{drive}/proj_depth/groundtruth/image_02/{i:010d}.png"
    h, w = scene.depth.shape
    # Projected LiDAR: about 6% of the pixels, none in the top third of the frame.
    keep = (rng.random((h, w)) < 0.06) & (np.arange(h)[:, None] >= h // 3)
    values = np.where(keep, np.clip(np.round(scene.depth * 256.0), 1, 65535), 0)
    _save_rgb(scene.image, root / rgb)
    _save_uint16_png(values, root / gt)
    return f"{rgb} {gt} {scene.focal:.4f}"


def _write_eth3d_sample(root: Path, i: int, scene: SyntheticScene, rng: np.random.Generator) -> str:
    place = ("office", "courtyard", "terrace")[i % 3]
    n = f"DSC_{i + 1:04d}.JPG"
    rgb = f"rgb/{place}/images/dslr_images/{n}"
    gt = f"depth/{place}_dslr_depth/{place}/ground_truth_depth/dslr_images/{n}"
    depth = scene.depth.astype("<f4")
    depth[_holes(depth.shape, rng, 0.1)] = np.inf
    _save_rgb(scene.image, root / rgb)
    (root / gt).parent.mkdir(parents=True, exist_ok=True)
    (root / gt).write_bytes(depth.tobytes())
    return f"{rgb} {gt}"


def _write_scannet_sample(root: Path, i: int, scene: SyntheticScene, rng: np.random.Generator) -> str:
    folder = f"scene{406 + i // 2:04d}_0{i % 3}"
    n = f"{(i + 1) * 100:06d}"
    values = _millimetres(scene.depth)
    values[_holes(values.shape, rng, 0.03)] = 0
    _save_rgb(scene.image, root / folder / "color" / f"{n}.jpg")
    _save_uint16_png(values, root / folder / "depth" / f"{n}.png")
    return f"{folder}/color/{n}.jpg {folder}/depth/{n}.png"


def _write_diode_sample(root: Path, i: int, scene: SyntheticScene, rng: np.random.Generator) -> str:
    kind = ("indoors", "outdoor")[i % 2]
    scene_id, scan_id = 21 + i // 2, 189 + i
    folder = f"{kind}/scene_{scene_id:05d}/scan_{scan_id:05d}"
    stem = f"{folder}/{scene_id:05d}_{scan_id:05d}_{kind}_{(i * 10) % 360:03d}_000"
    mask = ~_holes(scene.depth.shape, rng, 0.05)
    depth = np.where(mask, scene.depth, 0.0).astype(np.float32)[:, :, None]
    _save_rgb(scene.image, root / f"{stem}.png")
    np.save(root / f"{stem}_depth.npy", depth)
    np.save(root / f"{stem}_depth_mask.npy", mask.astype(np.float32))
    return f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy"


# Per benchmark: the writer of one sample and the default (H, W): the real size (NYUv2's reader needs 480x640,
# KITTI's KB crop at least 352x1216) or a small one of the real shape.
_SAMPLE_WRITERS = {
    "nyu": (_write_nyu_sample, (480, 640)),
    "kitti": (_write_kitti_sample, (375, 1242)),
    "eth3d": (_write_eth3d_sample, (336, 504)),
    "scannet": (_write_scannet_sample, (480, 640)),
    "diode": (_write_diode_sample, (192, 256)),
}
