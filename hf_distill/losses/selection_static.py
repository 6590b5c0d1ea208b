"""Exact order statistics with every shape fixed by the input's shape: the accelerator path, which never makes the
host wait.

Every (pixel, level) pair is carried through all ``REFINE_PASSES`` radix passes; pairs outside the chosen cells go to
``DUMP_CELLS`` dump cells (spread so that no single cell is an atomic hot spot on a GPU). Work a GPU does in parallel,
but a CPU does not: ``selection_cpu.py`` is the CPU's path, with the same results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_distill.losses.selection import (
    REFINE_PASSES,
    Selection,
    key_spans,
    locate_buckets,
    lowest_pixels,
    radix_pass,
)
from hf_distill.losses.value_keys import order_keys

DUMP_CELLS = 256  # pairs outside the chosen cells are spread over this many dump cells (no single atomic hot spot)


def select_ranks_static(values: Tensor, cell: Tensor, counts: Tensor, parents: Tensor, ranks: Tensor) -> Selection:
    """Exact order statistics: a pixel holding the 0-based ascending rank ``ranks[g, j]`` of every group g.

    values: (M,) pixel values; cell: (M,) int32 fine context * nb + bucket, buckets non-decreasing in the value;
    counts: (G, nb) int64 pixels per (group, bucket); parents: (F, L) the group of each fine context at each level;
    ranks: (G, k). Queries are numbered group by group (Q = G * k); a query on an empty group returns pixel -1.
    The pairs of every pixel and level are kept: a pair outside the chosen cells has a group >= G (a dump group).
    """
    groups, nb = counts.shape
    bits = nb.bit_length() - 1
    device = values.device
    queries = ranks.numel()
    found = locate_buckets(counts, ranks)
    levels = parents.shape[1]
    pixel_cell = cell.long()
    pixel_groups = parents[pixel_cell >> bits]  # (M, L)
    ids = found.cell_id[pixel_groups * nb + (pixel_cell & (nb - 1))[:, None]].reshape(-1)  # (M * L,)
    pair_pixel = torch.arange(len(cell), device=device)[:, None].expand(-1, levels).reshape(-1)
    spread = torch.arange(len(pair_pixel), device=device) & (DUMP_CELLS - 1)
    pair_group = torch.where(ids < queries, pixel_groups.reshape(-1), groups + spread)
    ids = torch.where(ids < queries, ids, queries + spread)

    keys = order_keys(values.detach()[pair_pixel]).long()
    cells = queries + DUMP_CELLS  # cell ids: the queries', then the dump cells
    q_cell, q_rank = found.cell, found.rank
    for _ in range(REFINE_PASSES):
        low, span = key_spans(ids, keys, cells)
        q_cell, q_rank, ids = radix_pass(ids, keys, low, span, q_cell, q_rank, static=True)
        ids = torch.where(ids < queries, ids, queries + spread)
    first = lowest_pixels(ids, pair_pixel, cells)
    return Selection(first[q_cell], found.bucket, pair_group, pair_pixel)
