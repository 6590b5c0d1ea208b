#!/usr/bin/env python
"""Predict relative depth for images and save colourised (and optionally raw) maps.

    python scripts/infer.py --checkpoint path/to/student_final.safetensors --arch_name depthanything-base \
        --output_dir output/inference                      # reads data/input/ like the original tool
    python scripts/infer.py --checkpoint OUT_DIR --input photo.jpg --output_dir out --save_raw npy --side_by_side

``--checkpoint`` is a model folder, an alias or Hub id, or a weights file (.safetensors/.pth, HF or
original layout) whose structure ``--arch_name`` gives (an alias or a folder with config.json).
For each image ``NAME`` it writes ``NAME_depth.png`` (Turbo colormap, nearer = warmer), optionally
``NAME_depth.npy`` (raw float32 prediction) or ``NAME_depth16.png`` (prediction min-max scaled to 16 bit),
and ``NAME_side_by_side.png``. Sub-folders of ``--input_dir`` are mirrored; files that share a name in one folder
(``a.jpg``, ``a.png``) are told apart by their extension (``a_jpg_depth.png``, ``a_png_depth.png``).

Images are read as a viewer shows them (hf_distill.data.images): EXIF orientation applied, so a portrait phone
photo gives a portrait depth map that lines up with it; alpha dropped; greyscale, palette, CMYK and 16-bit images
converted; every map is written at the displayed size of its image. Unreadable files are skipped and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hf_distill.data.images import open_rgb
from hf_distill.evaluation import load_model_and_processor, predict_depth
from hf_distill.visualize import colorize_depth, make_grid

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_INPUT_DIR = "data/input"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder, alias, Hub id or weights file")
    parser.add_argument("--arch_name", default=None, help="structure for a weights file: alias or config folder")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input_dir", default=None, help=f"folder of images (default {DEFAULT_INPUT_DIR})")
    source.add_argument("--input", default=None, help="a single image")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--processing_res", type=int, default=None, help="default: the model's processor size")
    parser.add_argument("--save_raw", choices=["png16", "npy"], default=None)
    parser.add_argument("--side_by_side", action="store_true", help="also save image | colourised depth")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def list_images(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """(base folder, image paths) to process."""
    if args.input is not None:
        path = Path(args.input)
        if not path.is_file():
            raise FileNotFoundError(f"--input {path} not found")
        return path.parent, [path]
    folder = Path(args.input_dir or DEFAULT_INPUT_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} not found (pass --input_dir or --input)")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return folder, images


def output_stems(base: Path, images: list[Path]) -> dict[Path, Path]:
    """Each image's output stem relative to the output folder: its path under ``base`` without the extension, with
    the extension kept (``a_jpg``) where several images of one folder share a name."""
    stems = {path: path.relative_to(base).with_suffix("") for path in images}
    counts: dict[Path, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {path: stem.with_name(f"{stem.name}_{path.suffix[1:].lower()}") if counts[stem] > 1 else stem
            for path, stem in stems.items()}


def to_uint16(prediction: np.ndarray) -> np.ndarray:
    """Min-max scale a relative prediction to the full 16-bit range."""
    low, high = float(prediction.min()), float(prediction.max())
    scaled = (prediction - low) / (high - low) if high > low else np.zeros_like(prediction)
    return np.round(scaled * 65535).astype(np.uint16)


def run(args: argparse.Namespace) -> tuple[int, int]:
    """Returns (images written, images skipped as unreadable)."""
    base, images = list_images(args)
    model, processor = load_model_and_processor(args.checkpoint, args.arch_name)
    model.to(args.device)
    output_dir = Path(args.output_dir)
    written, skipped = 0, 0
    stems = output_stems(base, images)
    for path in tqdm(images, desc="depth", unit="img", disable=len(images) == 1):
        try:
            image = open_rgb(path)
        except OSError as error:
            tqdm.write(f"warning: skipping unreadable image {path}: {error}", file=sys.stderr)
            skipped += 1
            continue
        prediction = predict_depth(model, processor, [image], args.processing_res)[0]
        stem = output_dir / stems[path]
        stem.parent.mkdir(parents=True, exist_ok=True)
        colour = colorize_depth(prediction)
        Image.fromarray(colour).save(f"{stem}_depth.png")
        if args.save_raw == "npy":
            np.save(f"{stem}_depth.npy", prediction.astype(np.float32))
        elif args.save_raw == "png16":
            Image.fromarray(to_uint16(prediction)).save(f"{stem}_depth16.png")
        if args.side_by_side:
            make_grid([[np.asarray(image), colour]]).save(f"{stem}_side_by_side.png")
        written += 1
    note = f" ({skipped} unreadable images skipped)" if skipped else ""
    print(f"{written} depth maps written to {output_dir}{note}")
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written, _ = run(args)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
