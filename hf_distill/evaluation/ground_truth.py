"""Ground truth as a user's data stores it: file readers and the declaration that turns stored values into depth.

A declaration (``GroundTruthDeclaration``) says what the stored values are, and it is what ``scripts/evaluate.py
--benchmark folder`` / ``--dataset_name`` and training-time evaluation (``--eval_gt_kind`` ...) read:

- ``kind``: ``depth`` (larger = farther), ``disparity`` (stereo, larger = closer) or ``inverse_depth`` (1 / depth).
- ``scale``: stored value / scale = the kind's unit (1000 for millimetre PNGs, 256 for KITTI's). Metric kinds stored
  as integers need one (their unit cannot be guessed); float files default to 1.
- ``focal_baseline``: for disparity in pixels, focal length (pixels) x baseline (metres): depth = fb / disparity.
  Without it disparity ground truth is *relative*: it is scored as depth ``1 / disparity`` (arbitrary unit) after
  alignment in disparity space, so the scale-free metrics (abs_rel, log10 ratios, deltas) are exact and rmse is in
  that arbitrary unit.
- ``invalid_value``: a stored value that means "unknown" (default 0; None: none). Non-finite values (``inf`` in
  Middlebury's ``.pfm``, NaN) and values that give no positive depth are always invalid; a mask file or column
  (non-zero = valid) is ANDed on top.
- ``min_depth``/``max_depth``: the valid range of the derived depth (pixels outside are invalid) and the clip of the
  aligned prediction. Default: ``1e-3 < d < inf`` metres for metric ground truth, ``0 < d < inf`` for relative.

Files: 8/16-bit PNG (and TIFF, PGM) through PIL, ``.npy``, ``.pfm`` (its scale's sign gives the byte order and its
rows run bottom-up), ``.exr`` through the ``OpenEXR`` package (``pip install OpenEXR``; the first of the channels
Z, Y, R, or the only one). A 3-channel map uses its first channel.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "GROUND_TRUTH_EXTENSIONS",
    "GT_KINDS",
    "GroundTruthDeclaration",
    "parse_invalid_value",
    "read_ground_truth_file",
    "read_pfm",
]

GT_KINDS: tuple[str, ...] = ("depth", "disparity", "inverse_depth")
GROUND_TRUTH_EXTENSIONS: tuple[str, ...] = (".png", ".npy", ".pfm", ".exr", ".tif", ".tiff", ".pgm")
_EXR_CHANNELS = ("Z", "Y", "R", "depth", "Depth")


def parse_invalid_value(text: str | float | None) -> float | None:
    """A ``--gt_invalid`` value: a number (the stored value meaning unknown) or ``none``."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    if text.strip().lower() in ("none", ""):
        return None
    try:
        return float(text)
    except ValueError as error:
        raise ValueError(f"--gt_invalid must be a number (the stored value meaning unknown) or 'none', got "
                         f"{text!r}") from error


@dataclass(frozen=True)
class GroundTruthDeclaration:
    """What stored ground-truth values are (see the module docstring)."""

    kind: str = "depth"
    scale: float | None = None
    invalid_value: float | None = 0.0
    focal_baseline: float | None = None
    min_depth: float | None = None
    max_depth: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in GT_KINDS:
            raise ValueError(f"unknown ground-truth kind {self.kind!r}: choose from {', '.join(GT_KINDS)}")
        for name in ("scale", "focal_baseline"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"the ground truth's {name} must be a positive number, got {value}")
        if self.focal_baseline is not None and self.kind != "disparity":
            raise ValueError("a focal length x baseline converts disparity to depth: it needs --gt_kind disparity")
        if self.depth_range[0] >= self.depth_range[1]:
            raise ValueError(f"the ground truth's depth range is empty: {self.depth_range}")

    @property
    def is_metric(self) -> bool:
        """Whether the derived depth is in metres (False: relative disparity, arbitrary unit)."""
        return self.kind != "disparity" or self.focal_baseline is not None

    @property
    def depth_range(self) -> tuple[float, float]:
        """(min, max) of valid derived depth, with the defaults filled in."""
        low = self.min_depth if self.min_depth is not None else (1e-3 if self.is_metric else 0.0)
        high = self.max_depth if self.max_depth is not None else math.inf
        return float(low), float(high)

    def describe(self) -> str:
        """One line naming the declaration (for outputs and messages)."""
        parts = [self.kind]
        if self.scale is not None:
            parts.append(f"scale {self.scale:g}")
        if self.focal_baseline is not None:
            parts.append(f"focal x baseline {self.focal_baseline:g}")
        parts.append(f"invalid {self.invalid_value:g}" if self.invalid_value is not None else "no invalid value")
        low, high = self.depth_range
        parts.append(f"{low:g} < depth < {high:g}" + (" m" if self.is_metric else " (relative: 1 / disparity)"))
        return ", ".join(parts)

    def to_depth(self, stored: np.ndarray, where: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Derived depth float32 (H, W), 0 where invalid, and the valid mask bool (H, W).

        Raises ValueError naming ``where`` for a map that is not one (H, W) map, a metric kind stored as integers
        without a scale, a mask of another size, or a map without one valid pixel.
        """
        values = np.asarray(stored)
        if values.ndim == 3 and values.shape[-1] in (1, 3, 4):
            values = values[..., 0]
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.ndim != 2:
            raise ValueError(f"{where}: ground truth must be one (H, W) map, got shape {values.shape}")
        integer = np.issubdtype(values.dtype, np.integer) or values.dtype == bool
        if integer and self.scale is None and self.is_metric:
            raise ValueError(
                f"{where}: {self.kind} stored as {values.dtype} integers needs its unit: declare --gt_scale (1000 for "
                "millimetres, 256 for KITTI-style PNGs, 5000 for TUM) so that stored / scale is in metres"
            )
        raw = values.astype(np.float64)
        valid = np.isfinite(raw)
        if self.invalid_value is not None:
            valid &= raw != self.invalid_value
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim == 3:
                mask = mask[..., 0]
            if mask.shape != raw.shape:
                raise ValueError(f"{where}: the mask is {mask.shape[0]}x{mask.shape[1]} but the ground truth is "
                                 f"{raw.shape[0]}x{raw.shape[1]}")
            valid &= mask.astype(bool)
        value = np.where(valid, raw, 1.0) / (self.scale or 1.0)
        valid &= value > 0
        value = np.where(valid, value, 1.0)
        if self.kind == "depth":
            depth = value
        elif self.kind == "inverse_depth":
            depth = 1.0 / value
        else:
            depth = (self.focal_baseline or 1.0) / value
        low, high = self.depth_range
        valid &= (depth > low) & (depth < high) & np.isfinite(depth)
        if not valid.any():
            raise ValueError(f"{where}: no valid ground-truth pixel under the declaration ({self.describe()})")
        return np.where(valid, depth, 0.0).astype(np.float32), valid


def read_pfm(data: bytes, where: str = "<pfm>") -> np.ndarray:
    """A Portable Float Map as float32 (H, W) (``Pf``) or (H, W, 3) (``PF``), top row first.

    The header's scale gives the byte order (negative: little-endian); rows are stored bottom-up.
    """
    match = re.match(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s", data)
    if match is None:
        raise ValueError(f"{where}: not a PFM file (expected a 'Pf' or 'PF' header)")
    channels = 3 if match.group(1) == b"PF" else 1
    width, height, scale = int(match.group(2)), int(match.group(3)), float(match.group(4))
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    count = width * height * channels
    body = data[match.end():]
    if len(body) < count * 4:
        raise ValueError(f"{where}: PFM of {width}x{height}x{channels} holds {len(body)} bytes, expected {count * 4}")
    values = np.frombuffer(body, dtype=dtype, count=count).astype(np.float32)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.flipud(values.reshape(shape)).copy()


def _read_exr(data: bytes, where: str) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError as error:
        raise ValueError(f"{where}: reading .exr ground truth needs the OpenEXR package: pip install OpenEXR "
                         "(or pip install 'hf_distill[exr]')") from error
    channels = OpenEXR.File(io.BytesIO(data), separate_channels=True).channels()
    name = next((c for c in _EXR_CHANNELS if c in channels), None) or (next(iter(channels)) if channels else None)
    if name is None:
        raise ValueError(f"{where}: the EXR file has no channel")
    pixels = np.asarray(channels[name].pixels)
    return pixels[..., 0] if pixels.ndim == 3 else pixels


def read_ground_truth_file(data: bytes, name: str) -> np.ndarray:
    """Stored ground-truth values of a file's bytes, by the extension of ``name``: integer arrays for 8/16-bit
    images, float arrays for ``.npy``/``.pfm``/``.exr``/float TIFFs. Raises ValueError naming the file when it is
    unreadable or of an unknown kind."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
        if suffix == ".pfm":
            return read_pfm(data, name)
        if suffix == ".exr":
            return _read_exr(data, name)
        if suffix in (".png", ".tif", ".tiff", ".pgm"):
            try:
                image = Image.open(io.BytesIO(data))
            except Image.UnidentifiedImageError:
                raise ValueError(f"{name}: unreadable ground truth: not a {suffix[1:].upper()} image") from None
            with image:
                return np.asarray(image)
    except ValueError as error:
        if name in str(error):
            raise
        raise ValueError(f"{name}: unreadable ground truth: {error}") from error
    except (OSError, SyntaxError, EOFError) as error:
        raise ValueError(f"{name}: unreadable ground truth: {error}") from error
    raise ValueError(f"{name}: unknown ground-truth file type {suffix!r}; readable: "
                     f"{', '.join(GROUND_TRUTH_EXTENSIONS)}")
