"""Training sources as Hugging Face `datasets`: NYU (DenseDepth CSV layout), image folders, webdataset shards,
and generated scenes, and any dataset `datasets.load_dataset` reads (a Hub id, a local folder of parquet/arrow files,
a data file, a `save_to_disk` folder).

Every source follows the `datasets` convention: `ds[i]["image"]` is a decoded PIL image (a `datasets.Image()`
column; generated scenes are rendered on access). The view pipeline casts the column to
`datasets.Image(decode=False)` where it wants the bytes (reduced-size JPEG decoding, skipping broken files). Sources
with ground truth add a `depth` column in metres: NYU's reads as float32 (H, W) through a formatting transform (plus
`depth_path`), a dataset's is its `--depth_column`, generated scenes' is exact.
"""

from __future__ import annotations

import functools
import glob
import re
import tarfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCE_FORMATS",
    "load_generated_scenes",
    "load_nyu",
    "load_images",
    "load_webdataset",
    "load_dataset_source",
    "load_training_source",
    "detect_source_format",
    "read_nyu_depth",
    "stream_split_warning",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
SOURCE_FORMATS = ("auto", "nyu", "images", "webdataset", "generated")
GENERATED_SCENES_CACHE = 1024  # rendered scenes kept per process (about 0.3 MB each at 240x320)
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


def read_nyu_depth(path: str | Path) -> np.ndarray:
    """A DenseDepth NYU depth PNG as float32 metres (H, W); 0 stays 0 (invalid).

    Units follow the file's bit depth, which is how the two splits differ: 8-bit (train) is
    v / 255 * 10, 16-bit (test) is millimetres v / 1000. 3-channel PNGs use their first channel.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            values = np.asarray(im)
    except (OSError, SyntaxError, EOFError) as err:
        raise OSError(f"cannot read depth map {path}: {err}") from err
    if values.ndim == 3:
        values = values[..., 0]
    if mode in _EIGHT_BIT_MODES:
        return values.astype(np.float32) * np.float32(10.0 / 255.0)
    if mode in _SIXTEEN_BIT_MODES:
        return values.astype(np.float32) * np.float32(1.0 / 1000.0)
    raise ValueError(f"depth map {path} has unsupported PNG mode {mode!r} (expected 8-bit or 16-bit grey)")


def _decode_depth(batch: dict) -> dict:
    """Formatting transform of NYU sources: depth file -> float32 metres, keeping its path for messages."""
    paths = [d["path"] for d in batch["depth"]]
    return {"image": batch["image"], "depth": [read_nyu_depth(p) for p in paths], "depth_path": paths}


def _resolve(entry: str, dataset_dir: Path) -> Path | None:
    """Locate a CSV path under dataset_dir as given, or without its leading `data/` (the real CSVs say
    `data/nyu2_train/...` relative to the parent of the folder that holds the files)."""
    rel = Path(entry)
    if rel.is_absolute():
        return rel if rel.is_file() else None
    candidates = [dataset_dir / rel]
    if len(rel.parts) > 1 and rel.parts[0] == "data":
        candidates.append(dataset_dir / Path(*rel.parts[1:]))
    return next((c for c in candidates if c.is_file()), None)


def _read_pairs(csv_path: Path, dataset_dir: Path) -> tuple[list[str], list[str]]:
    images, depths = [], []
    for lineno, line in enumerate(csv_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise ValueError(f"{csv_path}, line {lineno}: expected 'rgb_path,depth_path', got {line!r}")
        found = []
        for entry in fields:
            path = _resolve(entry, dataset_dir)
            if path is None:
                raise FileNotFoundError(
                    f"{csv_path}, line {lineno}: {entry} not found under {dataset_dir} "
                    "(also tried without a leading 'data/')"
                )
            found.append(str(path))
        images.append(found[0])
        depths.append(found[1])
    if not images:
        raise ValueError(f"{csv_path} lists no samples")
    return images, depths


def _existing_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset directory {path} does not exist")
    return path


def load_nyu(dataset_dir: str | Path, split: str = "train") -> datasets.Dataset:
    """NYU Depth V2 in the DenseDepth CSV layout (dataset_dir/nyu2_{split}.csv, lines `rgb_path,depth_path`).

    Columns: `image` (decoded), `depth` (reads as float32 metres (H, W), 0 = invalid), `depth_path`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = _existing_dir(dataset_dir)
    csv_path = root / f"nyu2_{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: {root} is not a DenseDepth NYU directory")
    images, depths = _read_pairs(csv_path, root)
    features = datasets.Features({"image": datasets.Image(), "depth": datasets.Image(decode=False)})
    ds = datasets.Dataset.from_dict({"image": images, "depth": depths}, features=features)
    ds.set_transform(_decode_depth)
    return ds


def load_images(path: str | Path) -> datasets.Dataset:
    """Every .jpg/.jpeg/.png/.webp file under `path` (recursive, hidden entries ignored) as an `image` column."""
    root = _existing_dir(path)
    files = sorted(
        str(p) for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return datasets.Dataset.from_dict({"image": files}, features=datasets.Features({"image": datasets.Image()}))


def _shard_files(pattern: str | Path) -> list[str]:
    text = str(pattern)
    if Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).glob("*.tar"))
    elif any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
    else:
        files = [text] if Path(text).is_file() else []
    if not files:
        raise FileNotFoundError(f"no webdataset shards (.tar) found at {text}")
    return files


def _member_key_and_field(name: str) -> tuple[str, str]:
    """Webdataset naming: ``dir/sa_1.jpg`` -> (``dir/sa_1``, ``jpg``): the key ends at the first dot of the last
    path component, the field is the rest."""
    folder, _, base = name.rpartition("/")
    stem, _, field = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), field


def _webdataset_images(shards: list[str]):
    """One example per sample key of the ``shards``: its first image member, undecoded. The other members (SA-1B's
    mask annotations, JSON of several MB per image) are passed over in the tar without being read or parsed."""
    for shard in shards:
        with tarfile.open(shard) as tar:
            last_key = None
            for member in tar:
                key, field = _member_key_and_field(member.name)
                if not member.isfile() or f".{field.lower()}" not in IMAGE_EXTENSIONS or key == last_key:
                    continue
                last_key = key
                data = tar.extractfile(member).read()
                yield {"__key__": key, "__url__": shard, "image": {"bytes": data, "path": f"{key}.{field}"}}


def _first_image_member(shard: str) -> str | None:
    with tarfile.open(shard) as tar:
        for member in tar:
            if member.isfile() and f".{_member_key_and_field(member.name)[1].lower()}" in IMAGE_EXTENSIONS:
                return member.name
    return None


def load_webdataset(
    pattern: str | Path, streaming: bool = True, *, shuffle_buffer: int = 1000, seed: int = 0
) -> datasets.IterableDataset | datasets.Dataset:
    """Webdataset tar shards (e.g. SA-1B `sa_*.tar` with `sa_N.jpg` + `sa_N.json`) as an `image` column.

    `pattern`: a directory (its *.tar), a glob, or one shard. Each sample's first .jpg/.jpeg/.png/.webp member
    is read; the other members (the json) are skipped unread, so a malformed annotation never stops training
    (`datasets`' webdataset builder would parse every json member while reading). Streaming datasets (one
    `datasets` shard per tar file) keep `__key__`/`__url__` for messages and are shuffled with a buffer of
    `shuffle_buffer` examples over a seeded shard order (the same on every rank, as `split_dataset_by_node`
    requires); `set_epoch` reshuffles. streaming=False builds an Arrow cache and returns a map-style
    `datasets.Dataset`.
    """
    files = _shard_files(pattern)
    if _first_image_member(files[0]) is None:
        raise ValueError(f"no .jpg/.jpeg/.png/.webp members found in the shards at {pattern} (e.g. {files[0]})")
    features = datasets.Features({"__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
                                  "image": datasets.Image(decode=False)})
    kind = datasets.IterableDataset if streaming else datasets.Dataset
    ds = kind.from_generator(_webdataset_images, features=features, gen_kwargs={"shards": files})
    if streaming and shuffle_buffer > 1:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return ds.cast_column("image", datasets.Image())


def stream_split_warning(num_shards: int, world_size: int, num_workers: int) -> str | None:
    """What goes wrong when ``num_shards`` streamed shards are split over ``world_size`` ranks with
    ``num_workers`` DataLoader workers each (``datasets.distributed.split_dataset_by_node``, then by shard per
    worker), or None when every reader gets the same number of whole shards."""
    workers = max(1, num_workers)
    readers = world_size * workers
    if num_shards % readers == 0:
        return None
    if num_shards % world_size:
        return (f"{num_shards} streamed shards do not divide among {world_size} ranks: every rank reads all "
                f"{num_shards} shards and keeps every {world_size}th example ({world_size}x the reading). Use a "
                f"multiple of {readers} shards ({world_size} ranks x {workers} DataLoader workers).")
    per_rank = num_shards // world_size
    if per_rank < workers:
        return (f"{num_shards} streamed shards give {per_rank} per rank for {workers} DataLoader workers: "
                f"{workers - per_rank} workers per rank read nothing. Use a multiple of {readers} shards "
                f"({world_size} ranks x {workers} workers) or --dataloader_num_workers {per_rank}.")
    return (f"{num_shards} streamed shards give {per_rank} per rank, which do not divide among {workers} "
            f"DataLoader workers: some workers read {per_rank // workers + 1} shards, others "
            f"{per_rank // workers}, and the last ones finish alone. Use a multiple of {readers} shards "
            f"({world_size} ranks x {workers} workers).")


_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
# A `save_to_disk` Dataset is read as a stream of this many shards (at most one example each), so that ranks and
# DataLoader workers can split it by shard.
_STREAM_SHARDS = 64


def _load_split(name: str, config_name: str | None, split: str, streaming: bool, revision: str | None = None):
    """`datasets.load_dataset` on a Hub id, a local folder or data files; `load_from_disk` on a saved `Dataset`."""
    path = Path(name)
    if path.is_dir() and (path / "state.json").is_file():  # Dataset.save_to_disk: the layout load_dataset refuses
        ds = datasets.load_from_disk(str(path))
        return ds.to_iterable_dataset(num_shards=max(1, min(_STREAM_SHARDS, len(ds)))) if streaming else ds
    if path.is_file() or any(c in name for c in "*?["):
        builder = _DATA_FILE_BUILDERS.get(Path(name).suffix)
        if builder is None:
            raise ValueError(f"data files must be {' or '.join(_DATA_FILE_BUILDERS)}")
        return datasets.load_dataset(builder, data_files={split: name}, split=split, streaming=streaming)
    return datasets.load_dataset(name, config_name, split=split, streaming=streaming, revision=revision)


_SPLITS = re.compile(r"(?:Unknown split|Bad split)\W.*?(\[[^\]]*\])")


def _explain(error: Exception, name: str, split: str, revision: str | None, flag: str) -> str | None:
    """What to do about the two ways a Hub dataset fails today, or None for other errors: a loading-script dataset
    (datasets >= 4 refuses to run them; the Hub's parquet conversion of most of them loads) and a missing split."""
    text = str(error)
    split_flag, revision_flag = flag.replace("_name", "_split"), flag.replace("_name", "_revision")
    if "scripts are no longer supported" in text:
        return (f"{flag} {name} is a loading-script dataset, which datasets >= 4 no longer runs ({text.strip()}). "
                f"Read the Hub's parquet conversion instead: add {revision_flag} refs/convert/parquet (its splits "
                f"may differ: check {split_flag}), or convert it to parquet/arrow files and pass their folder.")
    found = _SPLITS.search(text)
    if found:
        return (f"{flag} {name}{f' (revision {revision})' if revision else ''} has no split {split!r}: its splits are "
                f"{found.group(1)}; pass one with {split_flag}.")
    return None


def load_dataset_source(
    name: str,
    config_name: str | None = None,
    split: str = "train",
    *,
    streaming: bool = False,
    image_column: str = "image",
    depth_column: str | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    flag: str = "--dataset_name",
    revision: str | None = None,
    mask_column: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a dataset that `datasets` reads, as a source with an `image` column (and `depth`).

    Args:
        name: a Hub id; a local folder `load_dataset` reads (parquet/arrow files, a `DatasetDict` saved with
            `save_to_disk`); a .parquet/.arrow file or glob; or a `Dataset` saved with `save_to_disk` (read with
            `load_from_disk`, `split` ignored). Local data goes through the same `load_dataset` call as a Hub id.
        config_name, split: the dataset configuration and split.
        streaming: return an `IterableDataset` read lazily, shuffled with a seeded buffer of `shuffle_buffer`
            examples (`IterableViewDataset` splits it across ranks and DataLoader workers by shard).
        image_column: the column of images, renamed `image` (decoded PIL images).
        depth_column: the column of ground-truth depth in metres (float (H, W) maps, e.g. an `Image` of mode F or
            an array), renamed `depth`; None drops depth.
        flag: the command-line flag named in error messages.
        revision: the Hub revision (``refs/convert/parquet``: the Hub's parquet conversion of a script dataset).
        mask_column: a column of valid-pixel masks (non-zero = valid), renamed `mask`; None drops it.

    Raises:
        ValueError: a loading-script dataset or a missing split, saying what to pass instead.
    """
    try:
        ds = _load_split(name, config_name, split, streaming, revision)
    except (ValueError, RuntimeError) as error:
        explained = _explain(error, name, split, revision, flag)
        if explained is not None:
            raise ValueError(explained) from error
        if isinstance(error, RuntimeError):
            raise
        raise ValueError(f"{flag} {name} (split {split!r}): {error}") from error
        raise ValueError(f"{flag} {name} (split {split!r}): {error}") from error
    except OSError as error:
        raise OSError(f"{flag} {name} (split {split!r}): {error}") from error
    columns = {image_column: "image", **({depth_column: "depth"} if depth_column else {}),
               **({mask_column: "mask"} if mask_column else {})}
    available = ds.column_names
    if available is not None:
        for column, role in columns.items():
            if column not in available:
                option = f"--{role}_column"
                raise ValueError(f"{flag} {name}: no column {column!r} ({option}); its columns are {available}")
    features = ds.features or {}
    images = [column for column in columns if isinstance(features.get(column), datasets.Image)]
    # Undecoded while selecting, renaming and shuffling: those steps would otherwise decode every image.
    for column in images:
        ds = ds.cast_column(column, datasets.Image(decode=False))
    ds = ds.select_columns(list(columns))
    for column, role in columns.items():
        if column != role:
            ds = ds.rename_column(column, role)
    if streaming and shuffle_buffer > 1:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    for column, role in columns.items():
        if column in images or role == "image":
            ds = ds.cast_column(role, datasets.Image())  # paths or {"bytes", "path"} values become images
    return ds


@functools.lru_cache(maxsize=GENERATED_SCENES_CACHE)
def _generated_scene(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    from hf_distill.data.synthetic import render_scene

    scene = render_scene(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]), height, width)
    return scene.image, scene.depth


def _render_generated(batch: dict, *, seed: int, size: tuple[int, int], with_depth: bool) -> dict:
    """Formatting transform of generated sources: scene index -> RGB image (and exact depth in metres)."""
    scenes = [_generated_scene(seed, int(i), *size) for i in batch["scene"]]
    out = {"image": [Image.fromarray(image) for image, _ in scenes]}
    if with_depth:
        out["depth"] = [depth.copy() for _, depth in scenes]
    return out


def load_generated_scenes(
    num_scenes: int, *, size: tuple[int, int] = (240, 320), seed: int = 0, with_depth: bool = False
) -> datasets.Dataset:
    """`num_scenes` procedural RGB-D scenes of `size` (height, width), rendered when accessed.

    Scene `i` depends only on (`seed`, `i`): the same on every rank, worker and run. Columns: `image` (a PIL RGB
    image) and, with `with_depth`, `depth` (float32 metres (H, W), exact, all valid).
    """
    if num_scenes < 1:
        raise ValueError(f"--num_generated_scenes must be >= 1, got {num_scenes}")
    height, width = (int(v) for v in size)
    if height < 16 or width < 16:
        raise ValueError(f"--generated_scene_size must be at least 16x16, got {height}x{width}")
    ds = datasets.Dataset.from_dict({"scene": list(range(num_scenes))})
    ds.set_transform(functools.partial(_render_generated, seed=seed, size=(height, width), with_depth=with_depth))
    return ds


def detect_source_format(dataset_dir: str | Path) -> str:
    """The layout of a `--dataset_dir`: "webdataset" (a glob, a .tar, or a folder of .tar shards), "nyu"
    (nyu2_train.csv present) or "images"."""
    text = str(dataset_dir)
    path = Path(text)
    if any(c in text for c in "*?[") or (path.is_file() and path.suffix == ".tar"):
        return "webdataset"
    root = _existing_dir(path)
    if (root / "nyu2_train.csv").is_file():
        return "nyu"
    return "webdataset" if any(root.glob("*.tar")) else "images"


def load_training_source(
    dataset_dir: str | Path, format: str = "auto", *, shuffle_buffer: int = 1000, seed: int = 0
) -> datasets.Dataset | datasets.IterableDataset:
    """The training source at `dataset_dir`: "nyu" (nyu2_train.csv present), "webdataset" (*.tar shards,
    streamed) or "images" (any image tree); "auto" detects them in that order. A glob of shards also works.
    `shuffle_buffer` and `seed` shape the streamed shuffle (see `load_webdataset`)."""
    if format not in SOURCE_FORMATS:
        raise ValueError(f"format must be one of {SOURCE_FORMATS}, got {format!r}")
    if format == "auto":
        format = detect_source_format(dataset_dir)
    if format == "nyu":
        return load_nyu(dataset_dir, "train")
    if format == "webdataset":
        return load_webdataset(dataset_dir, shuffle_buffer=shuffle_buffer, seed=seed)
    return load_images(dataset_dir)
