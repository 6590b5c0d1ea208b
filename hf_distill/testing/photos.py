"""A user's data as it comes, built with PIL from generated scenes: phone photographs of every awkward kind, and
an RGB-D folder in the own-data layout with ground truth in any declared kind and file type.

:func:`write_phone_photos` writes one file per case of ``PHOTO_CASES`` (EXIF-rotated JPEGs, alpha, greyscale, CMYK,
palette, 16-bit, smaller than a crop, a panorama, a broken file) and returns, per case, the upright RGB a viewer
shows. :func:`write_rgbd_folder` writes ``images/`` beside ``depth/`` (see ``hf_distill.evaluation.own_data``) and
returns each sample's exact depth, so that a test can compare what the readers derive with it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from hf_distill.data.images import EXIF_ORIENTATION
from hf_distill.data.synthetic import render_scene

__all__ = ["PHOTO_CASES", "write_phone_photos", "write_pfm", "write_rgbd_folder"]

PHOTO_CASES: tuple[str, ...] = (
    "portrait_exif6.jpg", "upside_down_exif3.jpg", "alpha.png", "grey.jpg", "cmyk.jpg", "palette.png", "grey16.png",
    "small.png", "panorama.jpg", "plain.webp", "broken.jpg",
)


def _scene(seed: int, index: int, height: int, width: int):
    return render_scene(int(np.random.SeedSequence([seed, 11, index]).generate_state(1)[0]), height, width)


def _jpeg_with_orientation(upright: Image.Image, orientation: int, path: Path) -> None:
    """Store ``upright`` as a camera would: pixels turned back, and the EXIF tag saying how to show them."""
    undo = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    upright.transpose(undo).save(path, "JPEG", quality=95, exif=exif)


def write_phone_photos(
    root: str | Path, *, size: tuple[int, int] = (96, 128), seed: int = 0, panorama_width: int = 8000
) -> dict[str, np.ndarray | None]:
    """One file per ``PHOTO_CASES`` entry under ``root``; returns ``{file name: uint8 (H, W, 3) as displayed}``
    (None for ``broken.jpg``, which is not an image). ``size`` is the (H, W) of the landscape photos; the portrait
    is displayed (W, H); ``small.png`` is 20x28; the panorama is ``panorama_width`` wide and 1/8 as high."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = size
    shown: dict[str, np.ndarray | None] = {}
    portrait = Image.fromarray(_scene(seed, 0, width, height).image)  # displayed upright: W tall, H wide
    _jpeg_with_orientation(portrait, 6, root / "portrait_exif6.jpg")
    shown["portrait_exif6.jpg"] = np.asarray(portrait)
    upside = Image.fromarray(_scene(seed, 1, height, width).image)
    _jpeg_with_orientation(upside, 3, root / "upside_down_exif3.jpg")
    shown["upside_down_exif3.jpg"] = np.asarray(upside)

    rgb = _scene(seed, 2, height, width).image
    alpha = np.dstack([rgb, np.linspace(0, 255, width, dtype=np.uint8)[None].repeat(height, 0)])
    Image.fromarray(alpha, "RGBA").save(root / "alpha.png")
    shown["alpha.png"] = rgb  # alpha dropped, colours as stored
    grey = np.asarray(Image.fromarray(_scene(seed, 3, height, width).image).convert("L"))
    Image.fromarray(grey).save(root / "grey.jpg", quality=95)
    shown["grey.jpg"] = np.repeat(grey[..., None], 3, axis=2)
    colour = Image.fromarray(_scene(seed, 4, height, width).image)
    colour.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    shown["cmyk.jpg"] = np.asarray(colour)
    palette = colour.quantize(64)
    palette.save(root / "palette.png", transparency=0)
    shown["palette.png"] = np.asarray(palette.convert("RGB"))
    grey16 = (grey.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "grey16.png")
    shown["grey16.png"] = np.repeat(grey[..., None], 3, axis=2)
    small = _scene(seed, 5, 20, 28).image
    Image.fromarray(small).save(root / "small.png")
    shown["small.png"] = small
    strip = Image.fromarray(_scene(seed, 6, 32, 256).image).resize((panorama_width, panorama_width // 8))
    strip.save(root / "panorama.jpg", quality=90)
    shown["panorama.jpg"] = np.asarray(strip)
    plain = _scene(seed, 7, height, width).image
    Image.fromarray(plain).save(root / "plain.webp", lossless=True)
    shown["plain.webp"] = plain
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    shown["broken.jpg"] = None
    return shown


def write_pfm(path: str | Path, values: np.ndarray) -> None:
    """A float32 (H, W) map as a little-endian Portable Float Map (rows bottom-up, as the format stores them)."""
    values = np.asarray(values, dtype="<f4")
    header = f"Pf\n{values.shape[1]} {values.shape[0]}\n-1.0\n".encode()
    Path(path).write_bytes(header + np.flipud(values).tobytes())


def _write_exr(path: Path, values: np.ndarray) -> None:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"Z": np.ascontiguousarray(values, dtype=np.float32)}).write(str(path))


def _store(path: Path, stored: np.ndarray, gt_format: str) -> Path:
    path = path.with_suffix({"png16": ".png", "png8": ".png"}.get(gt_format, f".{gt_format}"))
    if gt_format in ("png16", "png8"):
        dtype = np.uint16 if gt_format == "png16" else np.uint8
        limit = np.iinfo(dtype).max
        Image.fromarray(np.clip(np.round(np.nan_to_num(stored, posinf=0)), 0, limit).astype(dtype)).save(path)
    elif gt_format == "npy":
        np.save(path, stored.astype(np.float32))
    elif gt_format == "pfm":
        write_pfm(path, stored)
    elif gt_format == "exr":
        _write_exr(path, stored)
    else:
        raise ValueError(f"unknown ground-truth format {gt_format!r}")
    return path


def write_rgbd_folder(
    root: str | Path,
    num_samples: int = 3,
    *,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    gt_format: str = "png16",
    kind: str = "depth",
    scale: float = 1000.0,
    focal_baseline: float = 1.0,
    invalid: float = 0.0,
    hole_fraction: float = 0.1,
    portrait: bool = True,
    bad: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """An own-data folder: ``root/images/sample_K.jpg`` beside ``root/depth/sample_K.<ext>``.

    Stored values follow the declaration ``kind``/``scale``/``focal_baseline`` (depth: d * scale, disparity:
    focal_baseline / d * scale, inverse depth: scale / d); about ``hole_fraction`` of the pixels are ``invalid``
    (written as ``inf`` in float files when ``invalid`` is not finite). With ``portrait``, sample 0 is an
    EXIF-rotated JPEG (orientation 6) whose ground truth is stored as displayed. ``bad`` adds broken samples named
    by their fault: ``size`` (ground truth of another size), ``empty`` (no valid pixel), ``unreadable`` (a depth
    file that is not one), ``missing`` (an image without ground truth).

    Returns ``{stem: exact depth float32 (H, W) in metres as displayed}`` of the good samples (holes included).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    exact: dict[str, np.ndarray] = {}

    def encode(depth: np.ndarray) -> np.ndarray:
        if kind == "depth":
            return depth * scale
        if kind == "disparity":
            return focal_baseline / depth * scale
        return scale / depth

    for index in range(num_samples):
        height, width = (size[1], size[0]) if portrait and index == 0 else size
        scene = _scene(seed, 100 + index, height, width)
        stem = f"sample_{index}"
        if portrait and index == 0:
            _jpeg_with_orientation(Image.fromarray(scene.image), 6, root / "images" / f"{stem}.jpg")
        else:
            Image.fromarray(scene.image).save(root / "images" / f"{stem}.jpg", quality=95)
        stored = encode(scene.depth.astype(np.float64))
        holes = rng.random(scene.depth.shape) < hole_fraction
        stored[holes] = invalid
        _store(root / "depth" / stem, stored, gt_format)
        exact[stem] = scene.depth
    for fault in bad:
        scene = _scene(seed, 200 + len(exact), *size)
        stem = f"bad_{fault}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.jpg", quality=95)
        stored = encode(scene.depth.astype(np.float64))
        if fault == "size":
            _store(root / "depth" / stem, stored[:-2], gt_format)
        elif fault == "empty":
            _store(root / "depth" / stem, np.full_like(stored, invalid), gt_format)
        elif fault == "unreadable":
            (root / "depth" / f"{stem}{_store_suffix(gt_format)}").write_bytes(b"this is not a depth map")
        elif fault != "missing":
            raise ValueError(f"unknown fault {fault!r}: size, empty, unreadable or missing")
    return exact


def _store_suffix(gt_format: str) -> str:
    return ".png" if gt_format.startswith("png") else f".{gt_format}"


def image_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encoded bytes of a uint8 (H, W[, 3]) array (for dataset columns built in tests)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()
