"""Zero-shot depth benchmarks in their Marigold on-disk layouts, read from a folder or a ``.tar``.

Each benchmark is an extracted (or still archived) evaluation set plus a split list whose lines name
the files of one sample relative to the archive root (the lists ship in ``hf_distill/data_splits``).
Readers decode ground truth to metres and build the evaluation mask with the benchmark's constants;
predictions are clipped to each benchmark's ``[min_depth, max_depth]`` (DIODE: 0.6..350).

========  ==========================================================  ================
name      ground truth / mask                                          valid depth
========  ==========================================================  ================
nyu       16-bit PNG mm, Eigen crop rows 45:471 cols 41:601 (480x640)  1e-3 < d < 10
kitti     16-bit PNG / 256, KB crop 352x1216 then Eigen crop           1e-5 < d < 80
eth3d     raw float32 of the image's H x W (4032x6048), inf invalid    1e-5 < d < inf
scannet   16-bit PNG mm                                                1e-3 < d < 10
diode     ``*_depth.npy`` (H, W, 1) + ``*_depth_mask.npy``              mask & d > 0
========  ==========================================================  ================
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hf_distill.data.images import open_rgb, to_rgb

SPLITS_DIR = Path(__file__).resolve().parent.parent / "data_splits"


@dataclass
class EvalSample:
    """One evaluation sample: ``image`` RGB, ``depth`` float32 (H, W) metres, ``valid`` bool (H, W).

    ``error`` (with ``image`` None) marks a sample that could not be read: evaluation skips and counts it.
    """

    name: str
    image: Image.Image | None
    depth: np.ndarray
    valid: np.ndarray
    error: str | None = None


class _Files:
    """Reads files by their split-list relative path from a folder or a tar archive.

    A tar may store members as ``rel``, ``./rel`` or under one top-level folder (``top/rel``); the
    prefix is found from the first listed file. The archive is (re)opened lazily per process.
    """

    def __init__(self, root: Path):
        self.root = root
        self.is_tar = root.is_file()
        self._prefix = ""
        self._members: dict[str, tarfile.TarInfo] | None = None
        self._tar: tarfile.TarFile | None = None
        self._pid: int | None = None

    def _archive(self) -> tarfile.TarFile:
        if self._tar is None or self._pid != os.getpid():
            try:
                self._tar = tarfile.open(self.root)
            except tarfile.TarError as error:
                raise ValueError(f"{self.root} is not a readable tar archive: {error}") from error
            self._pid = os.getpid()
        return self._tar

    def _index(self) -> dict[str, tarfile.TarInfo]:
        if self._members is None:
            members = {}
            for info in self._archive().getmembers():
                if info.isfile():
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    members[name] = info
            self._members = members
        return self._members

    def locate(self, first_rel: str) -> None:
        """Find the archive's top-level prefix from one listed path (no-op for folders)."""
        if not self.is_tar or first_rel in self._index():
            return
        suffix = "/" + first_rel
        for name in self._index():
            if name.endswith(suffix):
                self._prefix = name[: -len(first_rel)]
                return

    def exists(self, rel: str) -> bool:
        if self.is_tar:
            return self._prefix + rel in self._index()
        return (self.root / rel).is_file()

    def read(self, rel: str) -> bytes:
        if self.is_tar:
            handle = self._archive().extractfile(self._index()[self._prefix + rel])
            return handle.read()
        return (self.root / rel).read_bytes()

    def __getstate__(self) -> dict:  # open archives do not pickle (DataLoader workers, spawn)
        state = self.__dict__.copy()
        state["_tar"] = None
        return state


@dataclass
class _Line:
    number: int  # 1-based line number in the split file
    fields: list[str]


def _open_image(files: _Files, rel: str) -> Image.Image:
    image = Image.open(io.BytesIO(files.read(rel)))
    image.load()
    return image


def _read_rgb(files: _Files, rel: str) -> Image.Image:
    return open_rgb(files.read(rel), name=rel)


def _read_png_depth(files: _Files, rel: str, scale: float) -> np.ndarray:
    array = np.asarray(_open_image(files, rel))
    if array.ndim == 3:
        array = array[..., 0]
    return array.astype(np.float32) / scale


def _range_mask(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    return np.isfinite(depth) & (depth > min_depth) & (depth < max_depth)


def _masked(mask: Callable[[np.ndarray], np.ndarray], depth: np.ndarray, where: str) -> np.ndarray:
    try:
        return mask(depth)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


def _check_same_size(image: Image.Image, depth: np.ndarray, where: str) -> None:
    if depth.shape != (image.height, image.width):
        raise ValueError(
            f"{where}: depth is {depth.shape[0]}x{depth.shape[1]} but the image is {image.height}x{image.width}"
        )


# --- per-benchmark sample readers: (files, line fields, where) -> (image, depth, valid) ---------------

_NYU_SIZE = (480, 640)
_NYU_EIGEN_CROP = (slice(45, 471), slice(41, 601))


def nyu_mask(depth: np.ndarray) -> np.ndarray:
    """NYUv2's evaluation mask of a 480x640 depth map in metres: the Eigen crop and 1e-3 < d < 10."""
    if depth.shape != _NYU_SIZE:
        raise ValueError(f"NYUv2 frames are 480x640 (the Eigen crop is defined there), got {depth.shape}")
    eigen = np.zeros(depth.shape, dtype=bool)
    eigen[_NYU_EIGEN_CROP] = True
    return _range_mask(depth, 1e-3, 10.0) & eigen


def _read_nyu(files: _Files, fields: list[str], where: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    image = _read_rgb(files, fields[0])
    depth = _read_png_depth(files, fields[1], 1000.0)
    _check_same_size(image, depth, where)
    return image, depth, _masked(nyu_mask, depth, where)


KB_CROP_HEIGHT, KB_CROP_WIDTH = 352, 1216


def kitti_benchmark_crop(height: int, width: int) -> tuple[slice, slice]:
    """KITTI benchmark (KB) crop: the bottom 352 rows, the central 1216 columns."""
    top, left = height - KB_CROP_HEIGHT, (width - KB_CROP_WIDTH) // 2
    return slice(top, top + KB_CROP_HEIGHT), slice(left, left + KB_CROP_WIDTH)


def kitti_eigen_mask(height: int, width: int) -> np.ndarray:
    """Eigen evaluation mask on a (KB-cropped) KITTI map (BTS / Marigold fractions)."""
    mask = np.zeros((height, width), dtype=bool)
    mask[int(0.3324324 * height) : int(0.91351351 * height), int(0.0359477 * width) : int(0.96405229 * width)] = True
    return mask


def kitti_mask(depth: np.ndarray) -> np.ndarray:
    """KITTI's evaluation mask of a KB-cropped depth map in metres: the Eigen crop and 1e-5 < d < 80."""
    return _range_mask(depth, 1e-5, 80.0) & kitti_eigen_mask(*depth.shape)


def _read_kitti(files: _Files, fields: list[str], where: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    image = _read_rgb(files, fields[0])
    depth = _read_png_depth(files, fields[1], 256.0)
    _check_same_size(image, depth, where)
    if depth.shape[0] < KB_CROP_HEIGHT or depth.shape[1] < KB_CROP_WIDTH:
        raise ValueError(f"{where}: KITTI frames must be at least 352x1216 for the KB crop, got {depth.shape}")
    rows, cols = kitti_benchmark_crop(*depth.shape)
    image = image.crop((cols.start, rows.start, cols.stop, rows.stop))
    depth = np.ascontiguousarray(depth[rows, cols])
    return image, depth, kitti_mask(depth)


def eth3d_mask(depth: np.ndarray) -> np.ndarray:
    """ETH3D's evaluation mask of a depth map in metres: finite and > 1e-5."""
    return _range_mask(depth, 1e-5, np.inf)


def _read_eth3d(files: _Files, fields: list[str], where: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    image = _read_rgb(files, fields[0])
    raw = np.frombuffer(files.read(fields[1]), dtype=np.float32)
    if raw.size != image.height * image.width:
        raise ValueError(
            f"{where}: {fields[1]} holds {raw.size} float32 values, expected {image.height}x{image.width} "
            "(the RGB image's size)"
        )
    depth = raw.reshape(image.height, image.width).copy()
    valid = eth3d_mask(depth)
    depth[~np.isfinite(depth)] = 0.0
    return image, depth, valid


def scannet_mask(depth: np.ndarray) -> np.ndarray:
    """ScanNet's evaluation mask of a depth map in metres: 1e-3 < d < 10."""
    return _range_mask(depth, 1e-3, 10.0)


def _read_scannet(files: _Files, fields: list[str], where: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    image = _read_rgb(files, fields[0])
    depth = _read_png_depth(files, fields[1], 1000.0)
    _check_same_size(image, depth, where)
    return image, depth, scannet_mask(depth)


def _read_npy(files: _Files, rel: str, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(files.read(rel)), allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{where}: {rel} is not a readable .npy array: {error}") from error


def diode_mask(depth: np.ndarray) -> np.ndarray:
    """DIODE's depth-side mask (finite and > 0); its archives add a ``*_depth_mask.npy`` on top."""
    return np.isfinite(depth) & (depth > 0)


def _read_diode(files: _Files, fields: list[str], where: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    image = _read_rgb(files, fields[0])
    depth = _read_npy(files, fields[1], where).astype(np.float32).squeeze()
    mask = _read_npy(files, fields[2], where).astype(bool).squeeze()
    _check_same_size(image, depth, where)
    if mask.shape != depth.shape:
        raise ValueError(f"{where}: mask {fields[2]} has shape {mask.shape}, depth has {depth.shape}")
    return image, depth, mask & diode_mask(depth)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Constants of one benchmark.

    ``min_depth``/``max_depth`` clip the aligned prediction; ``fields`` is how many relative paths a
    split line must give (KITTI lines also carry a focal length); ``needed`` indexes the paths the reader
    opens. ``hub_dataset``/``split`` name the dataset in model-index entries. ``mask`` is the benchmark's
    evaluation mask of a depth map in metres (crops and valid range), which the reader applies and which
    scores the same benchmark from other sources (a Hub copy, the DenseDepth NYU test split).
    """

    name: str
    display_name: str
    split_file: str
    split: str
    min_depth: float
    max_depth: float
    fields: int
    needed: tuple[int, ...]
    hub_dataset: str
    reader: Callable[[_Files, list[str], str], tuple[Image.Image, np.ndarray, np.ndarray]]
    mask: Callable[[np.ndarray], np.ndarray]

    @property
    def default_split_path(self) -> Path:
        return SPLITS_DIR / self.split_file


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "nyu", "NYUv2", "nyu_depth_labeled_filename_list_test.txt", "test",
            min_depth=1e-3, max_depth=10.0, fields=2, needed=(0, 1), hub_dataset="nyu_depth_v2", reader=_read_nyu,
            mask=nyu_mask,
        ),
        BenchmarkSpec(
            "kitti", "KITTI", "kitti_depth_eigen_test_files_with_gt.txt", "test",
            min_depth=1e-5, max_depth=80.0, fields=2, needed=(0, 1), hub_dataset="kitti", reader=_read_kitti,
            mask=kitti_mask,
        ),
        BenchmarkSpec(
            "eth3d", "ETH3D", "eth3d_depth_eth3d_filename_list.txt", "test",
            min_depth=1e-5, max_depth=float("inf"), fields=2, needed=(0, 1), hub_dataset="eth3d", reader=_read_eth3d,
            mask=eth3d_mask,
        ),
        BenchmarkSpec(
            "scannet", "ScanNet", "scannet_depth_scannet_val_sampled_list_800_1.txt", "validation",
            min_depth=1e-3, max_depth=10.0, fields=2, needed=(0, 1), hub_dataset="scannet", reader=_read_scannet,
            mask=scannet_mask,
        ),
        BenchmarkSpec(
            "diode", "DIODE", "diode_depth_diode_val_all_filename_list.txt", "validation",
            min_depth=0.6, max_depth=350.0, fields=3, needed=(0, 1, 2), hub_dataset="diode", reader=_read_diode,
            mask=diode_mask,
        ),
    )
}


class BenchmarkDataset(Sequence):
    """Lazy sequence of ``EvalSample``; files are read when an item is accessed."""

    def __init__(self, spec: BenchmarkSpec, files: _Files, split_file: Path, lines: list[_Line]):
        self.spec = spec
        self.files = files
        self.split_file = split_file
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> EvalSample:  # type: ignore[override]
        line = self.lines[index]
        where = f"{self.split_file}:{line.number}"
        image, depth, valid = self.spec.reader(self.files, line.fields, where)
        return EvalSample(name=line.fields[0], image=image, depth=depth, valid=valid)

    def select(self, indices: Sequence[int]) -> BenchmarkDataset:
        """A lazy sub-sequence (e.g. one process's shard)."""
        return BenchmarkDataset(self.spec, self.files, self.split_file, [self.lines[i] for i in indices])


def read_list_file(path: Path, what: str = "list file") -> list[tuple[int, list[str]]]:
    """The lines of a list of relative paths (a benchmark's split, an own-data listing) as (1-based line number,
    whitespace-separated fields), without blank lines and ``#`` comments. ``what`` names the file in errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        fields = text.split()
        if fields and not fields[0].startswith("#"):
            lines.append((number, fields))
    return lines


def _parse_split(spec: BenchmarkSpec, split_file: Path) -> list[_Line]:
    lines = []
    for number, fields in read_list_file(split_file, "split file"):
        if len(fields) < spec.fields:
            raise ValueError(f"{split_file}:{number}: expected {spec.fields} relative paths for {spec.name}, got "
                             f"{' '.join(fields)!r}")
        if "None" in (fields[i] for i in spec.needed):  # KITTI frames without ground truth
            continue
        lines.append(_Line(number, fields))
    return lines


def load_benchmark(
    name: str, data_dir: str | Path, split_file: str | Path | None = None, max_samples: int | None = None
) -> BenchmarkDataset:
    """Open a benchmark for evaluation.

    Args:
        name: one of ``BENCHMARKS`` (nyu, kitti, eth3d, scannet, diode).
        data_dir: the extracted archive root, or the ``.tar`` archive itself.
        split_file: a list in the benchmark's line format; defaults to the shipped standard list.
        max_samples: keep only the first N samples (after dropping lines without ground truth).

    Returns:
        A lazy sequence of ``EvalSample``. Every listed file is checked up front: a missing one raises
        ``FileNotFoundError`` naming the file and the split-list line.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    root = Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"{name} data not found at {root}")
    split_path = Path(split_file) if split_file is not None else spec.default_split_path
    lines = _parse_split(spec, split_path)
    if max_samples is not None:
        lines = lines[:max_samples]
    files = _Files(root)
    if lines:
        files.locate(lines[0].fields[0])
    for line in lines:
        for i in spec.needed:
            if not files.exists(line.fields[i]):
                raise FileNotFoundError(
                    f"{root}: {line.fields[i]} not found (listed on line {line.number} of {split_path})"
                )
    return BenchmarkDataset(spec, files, split_path, lines)


def depth_in_metres(value, where: str) -> np.ndarray:
    """A depth column value (float PIL image of mode ``F``, array, nested list) as float32 (H, W) metres.

    Integer depth (16-bit PNGs in millimetres, 8-bit scaled maps) has dataset-specific units: it is refused
    rather than guessed.
    """
    depth = np.asarray(value)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ValueError(f"{where}: depth must be one (H, W) map, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"{where}: depth holds {depth.dtype} values; expected float depth in metres (integer maps have "
            "dataset-specific units: convert them to metres first)"
        )
    return depth.astype(np.float32, copy=False)


class DatasetSamples(Sequence):
    """Lazy sequence of ``EvalSample`` over a ``datasets.Dataset`` with a decoded ``image`` column and a ``depth``
    column in metres; ``mask`` (a benchmark's, see ``BenchmarkSpec.mask``) gives each sample's valid pixels."""

    def __init__(self, source, mask: Callable[[np.ndarray], np.ndarray], name: str):
        missing = {"image", "depth"} - set(source.column_names)
        if missing:
            raise ValueError(f"{name}: evaluation data needs 'image' and 'depth' columns, missing {sorted(missing)}")
        self.source = source
        self.mask = mask
        self.name = name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> EvalSample:  # type: ignore[override]
        example = self.source[index]
        where = f"{self.name}[{index}]"
        image = to_rgb(example["image"])
        depth = depth_in_metres(example["depth"], where)
        _check_same_size(image, depth, where)
        return EvalSample(name=where, image=image, depth=depth, valid=_masked(self.mask, depth, where))


def range_mask(min_depth: float, max_depth: float) -> Callable[[np.ndarray], np.ndarray]:
    """The mask of data without a benchmark protocol: finite depth with ``min_depth < d < max_depth``."""
    return functools.partial(_range_mask, min_depth=min_depth, max_depth=max_depth)
