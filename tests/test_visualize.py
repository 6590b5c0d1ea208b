"""Colourised depth and comparison grids."""

import numpy as np
import pytest
import torch

from hf_distill.visualize import colorize_depth, make_grid, turbo_lut


def _warmth(rgb: np.ndarray) -> float:
    return float(rgb[..., 0].astype(int).mean() - rgb[..., 2].astype(int).mean())


def test_turbo_lut_runs_cold_to_hot():
    lut = turbo_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[50, 2] > lut[50, 0]  # blue side
    assert lut[230, 0] > lut[230, 2]  # red side
    assert lut[128, 1] > 200  # green-yellow middle


def test_nearer_is_warmer_for_disparity_and_for_depth():
    ramp = np.tile(np.linspace(1.0, 5.0, 64), (8, 1))  # increases to the right
    disparity_colours = colorize_depth(ramp)
    assert disparity_colours.shape == (8, 64, 3) and disparity_colours.dtype == np.uint8
    # large disparity = near = right side: warmer
    assert _warmth(disparity_colours[:, -8:]) > 0 > _warmth(disparity_colours[:, :8])
    depth_colours = colorize_depth(torch.tensor(ramp), disparity=False)  # small depth = near = left side
    assert _warmth(depth_colours[:, :8]) > 0 > _warmth(depth_colours[:, -8:])


def test_invalid_and_nonfinite_pixels_are_black_and_outliers_do_not_set_the_range():
    values = np.tile(np.linspace(0.0, 1.0, 101), (4, 1))
    values[0, 0] = 1e6  # an outlier above the 98th percentile
    values[1, 1] = np.nan
    valid = np.ones_like(values, dtype=bool)
    valid[2, 2] = False
    colours = colorize_depth(values, valid)
    assert (colours[1, 1] == 0).all() and (colours[2, 2] == 0).all()
    lut = turbo_lut()
    assert (colours[0, 0] == lut[-1]).all()  # saturated, not stretching the range
    # The median value sits near the middle of the map even though the outlier is huge.
    middle = colours[3, 50]
    assert np.abs(middle.astype(int) - lut[128].astype(int)).max() <= 40
    assert (colorize_depth(values, np.zeros_like(valid)) == 0).all()
    with pytest.raises(ValueError, match="shape"):
        colorize_depth(values, valid[:, :5])


def test_make_grid_tiles_resizes_and_labels():
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((5, 10), 128, np.uint8)  # resized to the first cell's size
    grid = make_grid([[red, grey], [grey]], gap=2)
    assert grid.size == (2 * 20 + 2, 2 * 10 + 2)
    pixels = np.asarray(grid)
    assert (pixels[:10, :20] == [255, 0, 0]).all()
    assert (pixels[:10, 22:] == 128).all()
    assert (pixels[12:, :20] == 128).all()
    labelled = np.asarray(make_grid([[red, grey], [grey]], labels=[["teacher", ""], ["x"]], gap=2))
    assert (labelled[:10, :20] != pixels[:10, :20]).any()  # text drawn in the first cell
    assert (labelled[:10, 22:] == pixels[:10, 22:]).all()  # empty label: untouched
    with pytest.raises(ValueError, match="labels"):
        make_grid([[red, grey]], labels=[["a"]])
    with pytest.raises(ValueError, match="uint8"):
        make_grid([[red.astype(np.float32)]])
