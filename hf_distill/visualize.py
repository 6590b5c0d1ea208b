"""Colourised depth maps and comparison grids (no matplotlib).

The colormap is Turbo, evaluated from its published polynomial approximation (Google AI, 2019) into a
256-entry lookup table; it is perceptually ordered and readable in greyscale.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Turbo polynomial approximation: channel(x) = sum_k c_k x^k, k = 0..5, x in [0, 1].
_TURBO_COEFFS = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def turbo_lut(entries: int = 256) -> np.ndarray:
    """The Turbo colormap as a uint8 (entries, 3) table, index 0 = cold (dark blue), last = hot (dark red)."""
    x = np.linspace(0.0, 1.0, entries)
    powers = x[None, :] ** np.arange(6)[:, None]  # (6, entries)
    rgb = np.clip(_TURBO_COEFFS @ powers, 0.0, 1.0).T
    return np.round(rgb * 255).astype(np.uint8)


_LUT = turbo_lut()


def colorize_depth(
    depth: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
    *,
    disparity: bool = True,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """Colour a depth-like map with nearer = warmer.

    Args:
        depth: (H, W) map.
        valid: optional (H, W) bool; invalid and non-finite pixels are drawn black.
        disparity: True when larger values are nearer (the relative output of Depth Anything models);
            False for metric depth, whose small values are near.
        percentiles: robust range over the valid pixels; values outside are saturated.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    values = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    values = values.astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"colorize_depth expects an (H, W) map, got shape {values.shape}")
    mask = np.isfinite(values)
    if valid is not None:
        valid_np = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
        if valid_np.shape != values.shape:
            raise ValueError(f"valid has shape {valid_np.shape}, expected {values.shape}")
        mask &= valid_np.astype(bool)
    out = np.zeros(values.shape + (3,), dtype=np.uint8)
    if not mask.any():
        return out
    low, high = np.percentile(values[mask], percentiles)
    scaled = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    scaled = np.clip(scaled, 0.0, 1.0)
    if not disparity:
        scaled = 1.0 - scaled
    index = np.round(np.nan_to_num(scaled) * (len(_LUT) - 1)).astype(np.intp)
    out[mask] = _LUT[index[mask]]
    return out


def _to_rgb(cell: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(cell, Image.Image):
        return cell.convert("RGB")
    array = np.asarray(cell)
    if array.dtype != np.uint8:
        raise ValueError(f"grid cells must be uint8 images, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"grid cells must be (H, W) or (H, W, 3), got shape {array.shape}")
    return Image.fromarray(array)


def make_grid(
    rows: list[list[np.ndarray | Image.Image]],
    labels: list[list[str]] | None = None,
    *,
    gap: int = 2,
) -> Image.Image:
    """Tile images into a grid; every cell is resized to the first cell's size.

    Args:
        rows: rows of uint8 (H, W, 3) / (H, W) arrays or PIL images; rows may differ in length.
        labels: optional text per cell (same nesting as ``rows``; "" for none), drawn in each cell's
            top-left corner on a dark box with PIL's default font.
        gap: pixels between cells (dark grey background).

    Returns:
        An RGB PIL image.
    """
    if not rows or not all(rows):
        raise ValueError("make_grid needs at least one non-empty row")
    if labels is not None and [len(r) for r in labels] != [len(r) for r in rows]:
        raise ValueError("labels must have the same shape as rows")
    cells = [[_to_rgb(cell) for cell in row] for row in rows]
    width, height = cells[0][0].size
    columns = max(len(row) for row in cells)
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, len(cells) * height + (len(cells) - 1) * gap), (32, 32, 32)
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            x, y = c * (width + gap), r * (height + gap)
            grid.paste(cell if cell.size == (width, height) else cell.resize((width, height), Image.BILINEAR), (x, y))
            text = labels[r][c] if labels is not None else ""
            if text:
                left, top, right, bottom = draw.textbbox((x + 3, y + 2), text, font=font)
                draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
                draw.text((x + 3, y + 2), text, fill=(255, 255, 255), font=font)
    return grid
