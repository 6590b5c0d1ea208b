"""The HDN context families (docs/method.md, Losses): how an image splits into contexts at each hierarchy level.

A family is one function ``(teacher, side) -> (B, H*W) int32`` giving every pixel its context at the finest
level, plus one line in :data:`CONTEXT_FAMILIES` saying how its contexts nest (see
:class:`~hf_distill.losses.median_mad.ContextFamily`). The median/MAD engine does the rest; the family's name is
the ``hdn_variant`` option (``--hdn_variant``, ``--hdn_loss_variant``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_distill.losses.median_mad import ContextFamily, TeacherValues


def _value_bins(teacher: TeacherValues, edges: Tensor) -> Tensor:
    """(B, H*W) int32 bin of every teacher value between (B, bins - 1) interior edges: bin i holds
    edge_i <= t < edge_{i+1}; the top bin also holds the max."""
    batch = teacher.maps.shape[0]
    return torch.searchsorted(edges, teacher.maps.reshape(batch, -1).contiguous(), right=True, out_int32=True)


def depth_range(teacher: TeacherValues, side: int) -> Tensor:
    """``dr``: ``side`` equal-width bins of each image's teacher value range [min, max]."""
    frac = torch.arange(1, side, device=teacher.low.device, dtype=torch.float32) / side
    return _value_bins(teacher, teacher.low[:, None] + (teacher.high - teacher.low)[:, None] * frac)


def depth_percentile(teacher: TeacherValues, side: int) -> Tensor:
    """``dp``: ``side`` bins of each image's teacher values between its quantiles i / side (equal counts)."""
    return _value_bins(teacher, teacher.quantiles(side))


def _grid_cells(size: int, cells: int, device: torch.device) -> Tensor:
    """(size,) cell of each row: cell i covers rows [floor(i*size/cells), floor((i+1)*size/cells))."""
    starts = torch.arange(cells, device=device) * size // cells
    return torch.searchsorted(starts, torch.arange(size, device=device), right=True) - 1


def spatial_grid(teacher: TeacherValues, side: int) -> Tensor:
    """``ds``: the cells of a side x side grid of the image plane (row-major), the same for every image."""
    batch, height, width = teacher.maps.shape
    device = teacher.maps.device
    cells = _grid_cells(height, side, device)[:, None] * side + _grid_cells(width, side, device)
    return cells.int().reshape(1, -1).expand(batch, -1)


CONTEXT_FAMILIES: dict[str, ContextFamily] = {
    "dr": ContextFamily(depth_range, help="depth range: equal-width bins of the teacher's values"),
    "dp": ContextFamily(depth_percentile, help="depth percentile: equal-count bins of the teacher's values"),
    "ds": ContextFamily(spatial_grid, axes=2, grid=True, help="spatial: a 2^k x 2^k grid of the image"),
}
HDN_VARIANTS = tuple(CONTEXT_FAMILIES)
