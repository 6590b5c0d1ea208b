"""Cross-context view sampling (docs/method.md, Views) and the torch datasets that produce views.

For an image of short side m, one sample is:
  * a square region of side S ~ U[min(min_region, m), m] (integers), placed uniformly;
  * the global view: the region resized to G x G (bilinear, antialiased), seen by teacher and student;
  * P local patches: squares strictly inside the region, each resized to L x L for the teacher, of side
      p = L                                        when floor(7/8 * S) >= L (the paper's regime: the teacher
                                                   sees the patch at native resolution, as the paper's
                                                   560 x 560 crops of SA-1B regions)
      p in [p_lo, p_hi], p_hi = floor(7/8 * S)     otherwise (small images such as NYU 640x480, S = 480:
                                                   always a real zoom-in, so local-global never degenerates
                                                   into shared-context)
      p_lo = min(min_local_crop, p_hi)             when --min_local_crop is given, else min(ceil(S/2), p_hi)
  * boxes (x0, y0, x1, y1) of the patches in region pixel coordinates (pixel i spans [i, i+1)), so the
    patch seen by the teacher is the student's global-view box `box * G / S`.
Geometry is drawn from a numpy Generator seeded with (seed, epoch, index): reproducible, new every epoch.

Large JPEGs are decoded at reduced size (PIL `draft`, DCT scaling by 2, 4 or 8) when every output
(global view and patches) is downsampled by at least that factor; crop boxes are divided by the exact
draft scale, so the views cover the same source pixels as with full decoding.

Images are read as a viewer shows them (``hf_distill.data.images``): EXIF orientation applied (the geometry is drawn
on the displayed size), alpha dropped, greyscale, palette, CMYK and 16-bit converted. An image whose short side is
below the region or crop sizes is upsampled: the region is then the whole short side and the views resize it.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hf_distill.data.images import displayed_size, to_rgb
from hf_distill.data.sources import stream_split_warning

__all__ = [
    "ViewGeometry",
    "ViewSampler",
    "ViewDataset",
    "IterableViewDataset",
    "build_view_dataset",
    "open_image",
]

logger = logging.getLogger(__name__)

PATCH_MAX_FRACTION = 7 / 8
# Resizing reduces by an integer factor (box filter) first when downsampling by 2x or more, then
# resamples bilinearly; the same quality class as JPEG draft decoding, and about twice as fast.
_REDUCING_GAP = 1.0
# Errors PIL raises for unreadable, truncated or hostile files.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ViewGeometry:
    """Where the views of one sample come from, in source-image pixels.

    x0, y0, size: the region's top-left corner and side S. boxes: float32 (P, 4) patch boxes
    (x0, y0, x1, y1) in region coordinates, integer-valued.
    """

    x0: int
    y0: int
    size: int
    boxes: np.ndarray


def check_crop_size(flag: str, value: int) -> None:
    """A view side must be a positive multiple of the ViT patch size (14); the error names the flag."""
    if not isinstance(value, int) or value <= 0 or value % 14:
        raise ValueError(f"{flag} must be a positive multiple of 14 (the ViT patch size), got {value!r}")


class ViewSampler:
    """Draws the region, global view and local patches of docs/method.md (Views) from one image.

    Args:
        global_crop_size: G, side of the global view (multiple of 14; paper 560).
        local_crop_size: L, side of each patch given to the teacher (multiple of 14; paper 560).
        num_local_patches: P, patches per sample (0 allowed).
        min_region: lower bound of the region side (paper 644), capped by the image's short side.
        min_local_crop: lower bound of a patch side in source pixels; None = half the region side.
        seed: base seed; views depend on (seed, epoch, index) only.
        reduced_decoding: decode JPEGs at reduced size when the views allow it (PIL draft).
        view_depth: also resample the depth map exactly as the views (same boxes, same filter): ``view_depth``
            (G, G) and ``local_depth`` (P, L, L), for teachers that read exact depth (oracle teachers).
    """

    def __init__(
        self,
        global_crop_size: int = 560,
        local_crop_size: int = 560,
        num_local_patches: int = 2,
        min_region: int = 644,
        min_local_crop: int | None = None,
        seed: int = 0,
        *,
        reduced_decoding: bool = True,
        view_depth: bool = False,
    ) -> None:
        check_crop_size("--global_crop_size", global_crop_size)
        check_crop_size("--local_crop_size", local_crop_size)
        if num_local_patches < 0:
            raise ValueError(f"num_local_patches must be >= 0, got {num_local_patches}")
        if min_region < 2:
            raise ValueError(f"--min_region must be >= 2 (a patch must be smaller than its region), got {min_region}")
        if min_local_crop is not None and min_local_crop < 1:
            raise ValueError(f"--min_local_crop must be >= 1, got {min_local_crop}")
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size
        self.num_local_patches = num_local_patches
        self.min_region = min_region
        self.min_local_crop = min_local_crop
        self.seed = seed
        self.reduced_decoding = reduced_decoding
        self.view_depth = view_depth

    def sample_geometry(self, width: int, height: int, *, epoch: int, index: int) -> ViewGeometry:
        """The region and patch boxes for an image of `width` x `height` (reproducible per seed/epoch/index)."""
        m = min(width, height)
        if m < 2:
            raise ValueError(f"image of {width}x{height} pixels is too small for views")
        rng = np.random.default_rng([self.seed, epoch, index])
        size = int(rng.integers(min(self.min_region, m), m + 1))
        x0 = int(rng.integers(0, width - size + 1))
        y0 = int(rng.integers(0, height - size + 1))
        p_hi = min(self.local_crop_size, math.floor(PATCH_MAX_FRACTION * size))
        if p_hi == self.local_crop_size:  # the region holds an L-pixel patch: native resolution
            p_lo = p_hi
        else:
            p_lo = min(self.min_local_crop if self.min_local_crop is not None else math.ceil(size / 2), p_hi)
        boxes = np.zeros((self.num_local_patches, 4), np.float32)
        for k in range(self.num_local_patches):
            p = int(rng.integers(p_lo, p_hi + 1))
            px = int(rng.integers(0, size - p + 1))
            py = int(rng.integers(0, size - p + 1))
            boxes[k] = (px, py, px + p, py + p)
        return ViewGeometry(x0=x0, y0=y0, size=size, boxes=boxes)

    def __call__(
        self, image: Image.Image, depth: np.ndarray | None = None, *, epoch: int, index: int
    ) -> dict[str, Any]:
        """Views of one image (pass a lazily opened PIL image so large JPEGs can be draft-decoded).

        Returns global_view float32 (3, G, G) in [0, 1], local_views float32 (P, 3, L, L), boxes float32
        (P, 4) in region pixels, region_size float (S) and, with depth (H, W) metres: depth float32 (G, G)
        (nearest resampling, 0 = invalid) and depth_valid bool (G, G); with ``view_depth`` also view_depth float32
        (G, G) and local_depth float32 (P, L, L), resampled as the views are.
        """
        width, height = displayed_size(image)  # views are drawn on the photo as a viewer shows it (EXIF)
        depth = None if depth is None else np.asarray(depth, dtype=np.float32)
        if depth is not None and depth.shape != (height, width):
            raise ValueError(f"depth map of shape {depth.shape} does not match the image's {(height, width)}")
        geom = self.sample_geometry(width, height, epoch=epoch, index=index)
        decoded, scale = self._decode(image, geom)
        G, L, S = self.global_crop_size, self.local_crop_size, geom.size
        global_view = np.empty((3, G, G), np.float32)
        _to_chw(_resize(decoded, (geom.x0, geom.y0, S), G, scale), global_view)
        local_views = np.empty((len(geom.boxes), 3, L, L), np.float32)
        for out, (bx0, by0, bx1, _) in zip(local_views, geom.boxes.astype(np.int64)):
            _to_chw(_resize(decoded, (geom.x0 + bx0, geom.y0 + by0, bx1 - bx0), L, scale), out)
        sample: dict[str, Any] = {
            "global_view": global_view,
            "local_views": local_views,
            "boxes": geom.boxes,
            "region_size": float(S),
        }
        if depth is not None:
            centres = (np.arange(G) + 0.5) * (S / G)
            cols = geom.x0 + np.floor(centres).astype(np.int64)
            rows = geom.y0 + np.floor(centres).astype(np.int64)
            d = depth[rows[:, None], cols[None, :]]
            valid = np.isfinite(d) & (d > 0)
            sample["depth"] = np.where(valid, d, 0.0).astype(np.float32)
            sample["depth_valid"] = valid
        if self.view_depth:
            if depth is None:
                raise ValueError("the views' exact depth was asked for (a teacher that reads depth), but the source "
                                 "has no depth: oracle teachers need generated scenes (--dataset_format generated)")
            depth_image = Image.fromarray(np.ascontiguousarray(depth))  # mode F: resampled as the views, unquantised
            sample["view_depth"] = np.array(_resize(depth_image, (geom.x0, geom.y0, S), G, 1), np.float32)
            local_depth = np.empty((len(geom.boxes), L, L), np.float32)
            for out, (bx0, by0, bx1, _) in zip(local_depth, geom.boxes.astype(np.int64)):
                out[:] = np.asarray(_resize(depth_image, (geom.x0 + bx0, geom.y0 + by0, bx1 - bx0), L, 1))
            sample["local_depth"] = local_depth
        return sample

    def _decode(self, image: Image.Image, geom: ViewGeometry) -> tuple[Image.Image, int]:
        """Decode `image` as RGB, at 1/2, 1/4 or 1/8 size when all views allow it; returns (image, scale)."""
        scale = 1
        if self.reduced_decoding:
            ratio = geom.size / self.global_crop_size
            if len(geom.boxes):
                ratio = min(ratio, float((geom.boxes[:, 2] - geom.boxes[:, 0]).min()) / self.local_crop_size)
            factor = next((f for f in (8, 4, 2) if f <= ratio), 1)
            if factor > 1:
                width, height = image.size
                # PIL picks the largest DCT scale that keeps at least the requested size; `box` gives it.
                drafted = image.draft("RGB", (width // factor, height // factor))
                if drafted is not None:
                    scale = round(width / drafted[1][2])
        image.load()
        return to_rgb(image), scale  # upright, 8-bit RGB (hf_distill.data.images)


def _resize(image: Image.Image, square: tuple[int, int, int], size: int, scale: int) -> Image.Image:
    """The source square (x0, y0, side) in full-resolution pixels, from an image decoded at 1/scale, as size x size."""
    x0, y0, side = square
    if scale == 1 and side == size:
        return image.crop((x0, y0, x0 + side, y0 + side))
    box = (x0 / scale, y0 / scale, (x0 + side) / scale, (y0 + side) / scale)
    return image.resize((size, size), Image.BILINEAR, box=box, reducing_gap=_REDUCING_GAP)


def _to_chw(image: Image.Image, out: np.ndarray) -> None:
    """Write an RGB PIL image into `out`, float32 (3, H, W), scaled to [0, 1]."""
    for channel, band in zip(out, image.split()):
        np.multiply(np.asarray(band), np.float32(1.0 / 255.0), out=channel)


def _field_name(field: Any) -> str:
    if isinstance(field, Image.Image):
        return getattr(field, "filename", "") or "<in-memory image>"
    path = field.get("path") if isinstance(field, dict) else field
    return str(path) if path else "<image bytes>"


def open_image(field: Any) -> Image.Image:
    """Lazily open an `image` column value: a `datasets.Image(decode=False)` dict ({"path", "bytes"}),
    a path, or a PIL image (returned as is)."""
    if isinstance(field, Image.Image):
        return field
    if isinstance(field, dict):
        path, data = field.get("path"), field.get("bytes")
    elif isinstance(field, (str, Path)):
        path, data = field, None
    else:
        raise TypeError(f"unsupported image value of type {type(field).__name__}")
    return Image.open(io.BytesIO(data) if data is not None else path)


class UnreadableSampleError(OSError):
    """A training example whose image cannot be decoded; datasets skip it."""


_warned_errors: set[str] = set()


def _warn_skipped(error: OSError) -> None:
    """Warn once per broken file (per process): a file met again in a later epoch is skipped silently."""
    message = str(error)
    if message not in _warned_errors:
        _warned_errors.add(message)
        logger.warning("skipping a broken training sample: %s", message)


def undecoded_images(source: Any) -> Any:
    """`source` with its `image` column cast to `datasets.Image(decode=False)` ({"path", "bytes"} values), so that
    views are decoded here (reduced-size JPEG decoding, broken files skipped); other sources are returned as is."""
    import datasets

    features = getattr(source, "features", None) or {}
    image = features.get("image")
    if isinstance(image, datasets.Image) and image.decode:
        return source.cast_column("image", datasets.Image(decode=False))
    return source


def _make_sample(example: dict, sampler: ViewSampler, *, epoch: int, index: int) -> dict[str, Any]:
    """Views of one source example; raises UnreadableSampleError (naming the file) for broken images."""
    if example.get("__key__"):  # webdataset member: name it by shard and key
        name = f"{example.get('__url__')}:{example['__key__']}"
    else:
        name = _field_name(example["image"])
    try:
        with open_image(example["image"]) as image:
            depth = example.get("depth")
            if depth is not None:
                depth = np.asarray(depth, dtype=np.float32)
                width, height = displayed_size(image)
                if depth.shape != (height, width):
                    raise ValueError(
                        f"depth map {example.get('depth_path', '<depth>')} is {depth.shape[1]}x{depth.shape[0]} "
                        f"but image {name} is {width}x{height}"
                    )
            return sampler(image, depth, epoch=epoch, index=index)
    except _DECODE_ERRORS as err:
        raise UnreadableSampleError(f"cannot decode {name}: {err}") from err


class ViewDataset(torch.utils.data.Dataset):
    """Map-style dataset of views over a `datasets.Dataset` with an `image` column (and optional `depth`), read
    undecoded (`undecoded_images`).

    An unreadable image (or depth file) is skipped with a warning naming it: the next examples are tried
    and the sample reports how many were skipped in `skipped`; its views are still drawn with the
    requested index. A depth map whose size differs from its image raises ValueError naming both files.
    """

    def __init__(self, source: Any, sampler: ViewSampler, *, max_consecutive_skips: int = 64) -> None:
        if len(source) == 0:
            raise ValueError("the training source is empty")
        self.source = undecoded_images(source)
        self.sampler = sampler
        self.max_consecutive_skips = max_consecutive_skips
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.source)
        last_error = None
        for skipped in range(min(n, self.max_consecutive_skips)):
            i = (index + skipped) % n
            try:
                sample = _make_sample(self.source[i], self.sampler, epoch=self.epoch, index=index)
            except OSError as err:  # UnreadableSampleError, or a depth file the source could not read
                _warn_skipped(err)
                last_error = err
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"{min(n, self.max_consecutive_skips)} consecutive unreadable examples from index "
                           f"{index}; last error: {last_error}")


class IterableViewDataset(torch.utils.data.IterableDataset):
    """Streaming dataset of views over a `datasets.IterableDataset` with an `image` column, read undecoded.

    Splits the stream across ranks with `datasets.distributed.split_dataset_by_node` (whole shards per
    rank when the shard count is a multiple of the world size, otherwise every rank reads all shards and
    keeps one example in world_size), and across DataLoader workers by shard (done by `datasets`).
    rank/world_size default to torch.distributed's when it is initialised, else a single process.
    View randomness uses index = k * (world_size * num_workers) + (rank * num_workers + worker) for the
    k-th example of a worker, so no two workers draw the same views.
    """

    def __init__(self, source: Any, sampler: ViewSampler, *, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.source = undecoded_images(source)
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume_epoch: int | None = None
        self._resume_positions: dict[int, int] = {}

    def resume_at(self, positions: dict[int, int], *, epoch: int) -> None:
        """Start worker ``w``'s stream of pass ``epoch`` at raw example ``positions[w]``: the examples before it
        are read but neither decoded nor cropped, and later samples get the views they would have had."""
        self._resume_epoch, self._resume_positions = epoch, dict(positions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)  # new shuffle order of shards and buffer

    def _node(self) -> tuple[int, int]:
        if self.world_size is not None:
            return self.rank or 0, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        from datasets.distributed import split_dataset_by_node

        rank, world_size = self._node()
        stream = split_dataset_by_node(self.source, rank, world_size) if world_size > 1 else self.source
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if rank == 0 and worker == 0 and self.epoch == 0:
            message = stream_split_warning(getattr(self.source, "num_shards", 1), world_size, num_workers)
            if message:
                logger.warning(message)
        stride = world_size * num_workers
        offset = rank * num_workers + worker
        start = self._resume_positions.get(worker, 0) if self.epoch == self._resume_epoch else 0
        skipped = 0
        for k, example in enumerate(stream):
            if k < start:
                continue
            try:
                sample = _make_sample(example, self.sampler, epoch=self.epoch, index=offset + k * stride)
            except OSError as err:
                _warn_skipped(err)
                skipped += 1
                continue
            sample.update(skipped=skipped, stream_position=k, stream_worker=worker)
            skipped = 0
            yield sample


def build_view_dataset(source: Any, sampler: ViewSampler) -> ViewDataset | IterableViewDataset:
    """IterableViewDataset for a streaming `datasets.IterableDataset`, ViewDataset otherwise."""
    import datasets

    if isinstance(source, datasets.IterableDataset):
        return IterableViewDataset(source, sampler)
    return ViewDataset(source, sampler)
