"""A user's own RGB-D data as evaluation samples: a folder of image/depth pairs, or a ``datasets`` dataset.

Folder layout (``load_folder_samples``)::

    DIR/images/NAME.<jpg|png|...>     photographs, opened as a viewer shows them (``hf_distill.data.images``)
    DIR/depth/NAME.<png|npy|pfm|exr>  ground truth, paired with its image by file stem
    DIR/mask/NAME.<png|npy>           optional: non-zero = valid, ANDed with the declaration's invalid rule

or a list file whose lines are ``IMAGE DEPTH [MASK]`` relative to ``DIR``. A dataset (``load_dataset_samples``) has an
image column, a depth column (a decoded PNG, an array or nested lists) and optionally a mask column. The stored
values become depth through a ``GroundTruthDeclaration``.

Ground truth is taken in the orientation its photograph is displayed in; a map whose size matches only the stored
(un-rotated) pixels of an EXIF-rotated photo is turned the same way. A sample that cannot be scored (an unreadable
file, a ground truth whose size differs from its image, no valid pixel, an image without ground truth) is never
scored: it comes back as an ``EvalSample`` carrying ``error`` (naming the file and what is wrong), which the
evaluation skips and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hf_distill.data.images import exif_orientation, orient_like, to_rgb
from hf_distill.evaluation.benchmarks import BENCHMARKS, EvalSample, read_list_file
from hf_distill.evaluation.ground_truth import GROUND_TRUTH_EXTENSIONS, GroundTruthDeclaration, read_ground_truth_file

__all__ = ["OwnDataSamples", "is_own_data_folder", "load_dataset_samples", "load_folder_samples"]

logger = logging.getLogger(__name__)

IMAGE_FOLDER, DEPTH_FOLDER, MASK_FOLDER = "images", "depth", "mask"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_SAMPLE_ERRORS = (ValueError, OSError, KeyError, TypeError, SyntaxError, EOFError, Image.DecompressionBombError)


def is_own_data_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in the own-data layout (``images/`` beside ``depth/``)."""
    path = Path(path)
    return (path / IMAGE_FOLDER).is_dir() and (path / DEPTH_FOLDER).is_dir()


def _orient(stored: np.ndarray, image: Image.Image, orientation: int, where: str) -> np.ndarray:
    """Ground truth (H, W[, C]) in the displayed orientation of ``image`` (already upright)."""
    shape = stored.shape[:2] if stored.ndim == 3 and stored.shape[-1] in (1, 3, 4) else stored.shape
    displayed = (image.height, image.width)
    if tuple(shape) == displayed:
        return stored
    if orientation in (5, 6, 7, 8) and tuple(shape) == displayed[::-1]:
        plane = stored[..., 0] if stored.ndim == 3 else stored
        return orient_like(plane.astype(np.float32), orientation).astype(plane.dtype, copy=False)
    raise ValueError(f"{where}: ground truth is {shape[0]}x{shape[1]} but its image is {image.height}x{image.width}")


class OwnDataSamples(Sequence):
    """Lazy sequence of ``EvalSample`` read under a ``GroundTruthDeclaration``; bad samples carry ``error``.

    Attributes: ``label`` (how outputs and cards name the data), ``declaration``, ``min_depth``/``max_depth`` (the
    clip of aligned predictions, the declaration's range).
    """

    def __init__(self, label: str, declaration: GroundTruthDeclaration, entries: Sequence[Any]) -> None:
        self.label = label
        self.declaration = declaration
        self.entries = list(entries)
        self.min_depth, self.max_depth = declaration.depth_range

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, entry: Any) -> tuple[str, Image.Image, int, np.ndarray, np.ndarray | None, str]:
        """(name, upright RGB image, EXIF orientation, stored ground truth, mask or None, where) of one entry."""
        raise NotImplementedError

    def name_of(self, entry: Any) -> str:
        raise NotImplementedError

    def __getitem__(self, index: int) -> EvalSample:  # type: ignore[override]
        entry = self.entries[index]
        try:
            name, image, orientation, stored, mask, where = self.read(entry)
            stored = _orient(stored, image, orientation, where)
            if mask is not None:
                mask = _orient(np.asarray(mask), image, orientation, f"{where} (mask)")
            depth, valid = self.declaration.to_depth(stored, where, mask)
        except _SAMPLE_ERRORS as error:
            message = str(error)
            logger.warning("skipping evaluation sample %s: %s", self.name_of(entry), message)
            empty = np.zeros((0, 0), np.float32)
            return EvalSample(name=self.name_of(entry), image=None, depth=empty, valid=empty.astype(bool),
                              error=message)
        return EvalSample(name=name, image=image, depth=depth, valid=valid)

    def select(self, indices: Sequence[int]) -> OwnDataSamples:
        """A lazy sub-sequence (e.g. one process's shard)."""
        subset = object.__new__(type(self))
        subset.__dict__.update(self.__dict__)
        subset.entries = [self.entries[i] for i in indices]
        return subset


class FolderSamples(OwnDataSamples):
    """Samples of a folder: entries are (name, image path, depth path or an error text, mask path or None)."""

    def name_of(self, entry: Any) -> str:
        return entry[0]

    def read(self, entry: Any):
        name, image_path, depth_path, mask_path = entry
        if not isinstance(depth_path, Path):
            raise ValueError(depth_path)
        with Image.open(image_path) as opened:  # PIL's errors name the file
            opened.load()
            orientation, image = exif_orientation(opened), to_rgb(opened)
        stored = read_ground_truth_file(depth_path.read_bytes(), str(depth_path))
        mask = read_ground_truth_file(mask_path.read_bytes(), str(mask_path)) if mask_path is not None else None
        return name, image, orientation, stored, mask, str(depth_path)


def _by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in extensions:
            files.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    return files


def _folder_entries(root: Path) -> list[tuple]:
    images = _by_stem(root / IMAGE_FOLDER, _IMAGE_EXTENSIONS)
    depths = _by_stem(root / DEPTH_FOLDER, GROUND_TRUTH_EXTENSIONS)
    masks = _by_stem(root / MASK_FOLDER, GROUND_TRUTH_EXTENSIONS) if (root / MASK_FOLDER).is_dir() else None
    if not images:
        raise FileNotFoundError(f"{root / IMAGE_FOLDER}: no images ({', '.join(_IMAGE_EXTENSIONS)})")
    entries = []
    for stem, image_paths in images.items():
        candidates, depth = depths.get(stem, []), None
        if len(image_paths) > 1:
            depth = f"{stem}: several images share the stem: {', '.join(map(str, image_paths))}"
        elif not candidates:
            depth = f"{image_paths[0]}: no ground truth {root / DEPTH_FOLDER / stem}.* ({', '.join(GROUND_TRUTH_EXTENSIONS)})"
        elif len(candidates) > 1:
            depth = f"{stem}: several ground-truth files share the stem: {', '.join(map(str, candidates))}"
        else:
            depth = candidates[0]
        mask = None
        if masks is not None and isinstance(depth, Path):
            found = masks.get(stem, [])
            if len(found) != 1:
                depth = f"{root / MASK_FOLDER}: {'no' if not found else 'several'} mask file(s) for {stem}"
            else:
                mask = found[0]
        entries.append((stem, image_paths[0], depth, mask))
    unpaired = sorted(set(depths) - set(images))
    if unpaired:
        logger.warning("%s: %d ground-truth files have no image and are not evaluated: %s", root / DEPTH_FOLDER,
                       len(unpaired), unpaired[:10])
    return entries


def _list_entries(root: Path, split_file: Path) -> list[tuple]:
    entries = []
    for number, fields in read_list_file(split_file):
        if len(fields) not in (2, 3):
            raise ValueError(f"{split_file}:{number}: expected 'IMAGE DEPTH [MASK]' relative to {root}, got "
                             f"{' '.join(fields)!r}")
        paths = [root / field for field in fields]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{split_file}:{number}: {', '.join(missing)} not found")
        entries.append((fields[0], paths[0], paths[1], paths[2] if len(paths) == 3 else None))
    return entries


def load_folder_samples(
    data_dir: str | Path,
    declaration: GroundTruthDeclaration,
    *,
    split_file: str | Path | None = None,
    max_samples: int | None = None,
    label: str | None = None,
) -> FolderSamples:
    """Evaluation samples of a folder in the own-data layout (or listed by ``split_file``), see the module
    docstring. ``label`` names the data in outputs (default: the folder's own name)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation folder {root} not found")
    if split_file is not None:
        entries = _list_entries(root, Path(split_file))
    elif is_own_data_folder(root):
        entries = _folder_entries(root)
    else:
        raise FileNotFoundError(f"{root}: expected {IMAGE_FOLDER}/ beside {DEPTH_FOLDER}/ (paired by file stem), or "
                                "a list file of 'IMAGE DEPTH [MASK]' lines (--split_file)")
    if max_samples is not None:
        entries = entries[:max_samples]
    if not entries:
        raise ValueError(f"{root}: no samples to evaluate")
    return FolderSamples(label or _label(root.resolve().name), declaration, entries)


def _label(name: str) -> str:
    """A name for outputs that no standard benchmark's name shadows."""
    return f"{name} (own data)" if name in BENCHMARKS else name


class DatasetSamples(OwnDataSamples):
    """Samples of a ``datasets.Dataset``; entries are row indices."""

    def __init__(self, label, declaration, source, *, image_column: str, depth_column: str,
                 mask_column: str | None = None) -> None:
        super().__init__(label, declaration, range(len(source)))
        self.source = source
        self.columns = (image_column, depth_column, mask_column)

    def name_of(self, entry: Any) -> str:
        return f"{self.label}[{entry}]"

    def read(self, entry: Any):
        image_column, depth_column, mask_column = self.columns
        example = self.source[int(entry)]
        where = self.name_of(entry)
        value = example[image_column]
        if not isinstance(value, Image.Image):
            raise TypeError(f"{where}: column {image_column!r} holds {type(value).__name__}, not a decoded image")
        orientation = exif_orientation(value)
        image = to_rgb(value)
        mask = np.asarray(example[mask_column]) if mask_column else None
        return where, image, orientation, np.asarray(example[depth_column]), mask, where


def load_dataset_samples(
    name: str,
    declaration: GroundTruthDeclaration,
    *,
    config_name: str | None = None,
    split: str = "test",
    revision: str | None = None,
    image_column: str = "image",
    depth_column: str = "depth",
    mask_column: str | None = None,
    max_samples: int | None = None,
    flag: str = "--dataset_name",
) -> DatasetSamples:
    """Evaluation samples of a dataset ``datasets.load_dataset`` reads (a Hub id, a local folder of data files, a
    ``save_to_disk`` folder, a ``.parquet`` file); missing columns raise naming the dataset and ``flag``."""
    from hf_distill.data.sources import load_dataset_source

    source = load_dataset_source(name, config_name, split, revision=revision, image_column=image_column,
                                 depth_column=depth_column, mask_column=mask_column, flag=flag)
    if max_samples is not None:
        source = source.select(range(min(max_samples, len(source))))
    if len(source) == 0:
        raise ValueError(f"{flag} {name}: split {split!r} is empty")
    label = Path(name).resolve().name if Path(name).exists() else name  # a local folder by its own name
    return DatasetSamples(_label(label), declaration, source, image_column="image", depth_column="depth",
                          mask_column="mask" if mask_column else None)
