"""Photographs as a viewer shows them: one way to open any image file as 8-bit RGB, upright.

Every reader of the package (training sources, inference, evaluation, the app, the export check) opens images
through :func:`open_rgb` (or :func:`to_rgb` for an image already open), so all of them see the same pixels:

- **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``): a portrait phone photo stored sideways is
  predicted upright, and depth written for it lines up with the photo as every viewer shows it.
- **Alpha** (RGBA, LA, PA, a palette's transparency) is dropped: the colour channels are kept as stored, as
  transformers' ``load_image`` (and so ``pipeline("depth-estimation")``) does.
- **Greyscale** (L, 1) is repeated over the three channels; **palette** (P) images are expanded; **CMYK** (and
  YCbCr, LAB, HSV) JPEGs are converted by PIL's colour conversion.
- **16-bit and 32-bit greyscale** (I;16, I): the top 8 bits (value / 257, full range kept), not PIL's clipping
  at 255; **float** (F) greyscale is taken as [0, 1]. 16-bit RGB PNGs are read by PIL as 8-bit RGB.
- **Size** is kept: images smaller than a crop are upsampled by the views and by the processor, very large ones are
  decoded whole (JPEGs at a reduced scale in training where the views allow). An image above PIL's
  decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 2x: about 179 megapixels) is refused as unreadable.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "EXIF_ORIENTATION",
    "LARGE_IMAGE_PIXELS",
    "displayed_size",
    "exif_orientation",
    "open_rgb",
    "orient_like",
    "to_rgb",
]

EXIF_ORIENTATION = 0x0112
LARGE_IMAGE_PIXELS = 40_000_000  # above this, the preflight names the file (decoding costs memory and time)

# EXIF orientation -> the transpose that shows the stored pixels upright (PIL.ImageOps.exif_transpose's table).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of ``image`` (1 = upright, 2-8 = flipped or rotated; 1 without EXIF)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: show the pixels as stored
        return 1
    return value if value in _TRANSPOSE else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of ``image`` as a viewer shows it (swapped for the rotating EXIF orientations 5-8)."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def orient_like(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W) transposed as EXIF ``orientation`` transposes an image's stored pixels."""
    method = _TRANSPOSE.get(orientation)
    if method is None:
        return array
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, dtype=np.float32)).transpose(method))


def _colour(image: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode, by the rules of the module docstring."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        values = np.asarray(image).astype(np.float32)  # 16-bit PNGs open as I;16 or I: 0..65535
        grey = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.nan_to_num(np.asarray(image)) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An open PIL image as 8-bit RGB as a viewer shows it: EXIF orientation applied, then the module's colour
    rules (alpha dropped, greyscale/palette/CMYK/16-bit converted). Safe to apply twice."""
    oriented = ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image
    return _colour(oriented)


def open_rgb(source: str | Path | bytes | BinaryIO | Image.Image, name: str | None = None) -> Image.Image:
    """Open an image file (path, bytes, file object, or a PIL image) as 8-bit RGB as a viewer shows it.

    The file is decoded at once (the result does not keep it open). Raises ``OSError`` naming the file (``name``
    for bytes and file objects) when it is not a readable image.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if name is None:
        name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "<image bytes>")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(handle) as image:
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise OSError(f"cannot read image {name}: {error}") from error
