"""Exact order statistics of grouped pixel values: the steps that the CPU and the fixed-shape paths share.

A group's pixels sit in value buckets (``losses/value_keys.py``); per (group, bucket) counts locate the bucket that
holds each queried rank, then radix-selection passes split the chosen buckets' key ranges into ``2**REFINE_BITS``
parts until each query's cell holds one key. ``selection_cpu.py`` and ``selection_static.py`` run the passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

REFINE_BITS = 8  # key bits resolved per radix-selection pass
REFINE_PASSES = 4  # int32 keys: a cell's key span < 2**32 shrinks below 2**24, 2**16, 2**8, then to one key


@dataclass(frozen=True)
class Selection:
    """The answer to Q rank queries on G groups."""

    pixel: Tensor  # (Q,) index of a pixel holding each queried rank (-1 for a query on an empty group)
    bucket: Tensor  # (Q,) its bucket
    pair_group: Tensor  # (P,) group of every (pixel, group) pair in a queried (group, bucket); >= G: no pair
    pair_pixel: Tensor  # (P,) int64


def histogram(index: Tensor, size: int, weights: Tensor | None = None, static: bool = False) -> Tensor:
    """(N,) int indices in [0, size) -> (size,) int64 occurrences, or sums of the (N,) float ``weights``.

    ``bincount`` (the fastest on CPU) reads its input's range back to the host on CUDA: ``static`` avoids it.
    """
    if not static:
        return torch.bincount(index, weights=weights, minlength=size)
    if weights is not None:
        return weights.new_zeros(size).index_add_(0, index, weights)
    index = index.long()
    return torch.zeros(size, dtype=torch.long, device=index.device).scatter_add_(
        0, index, torch.ones(1, dtype=torch.long, device=index.device).expand_as(index)
    )


def first_query(chosen: Tensor, size: int) -> Tensor:
    """(size,) table: the smallest of the Q queries that chose each cell (``chosen``: (Q,) cells), Q where none did."""
    queries = len(chosen)
    table = torch.full((size,), queries, dtype=torch.long, device=chosen.device)
    return table.scatter_reduce_(0, chosen, torch.arange(queries, device=chosen.device), "amin")


@dataclass(frozen=True)
class Queries:
    """Q rank queries (numbered group by group) after the bucket step."""

    bucket: Tensor  # (Q,) the bucket holding each queried rank
    cell: Tensor  # (Q,) the query's cell id: the smallest query that chose the same (group, bucket)
    rank: Tensor  # (Q,) the queried rank within that (group, bucket)
    cell_id: Tensor  # (G * nb,) (group, bucket) -> cell id, Q where no query chose it


def locate_buckets(counts: Tensor, ranks: Tensor) -> Queries:
    """counts: (G, nb) int64 pixels per (group, bucket); ranks: (G, k) 0-based ascending ranks -> the G * k queries."""
    groups, nb = counts.shape
    cum = counts.cumsum(1)
    bucket = torch.searchsorted(cum, ranks, right=True).clamp_(max=nb - 1)  # (G, k)
    flat = (torch.arange(groups, device=counts.device)[:, None] * nb + bucket).reshape(-1)
    rank = ranks.reshape(-1) - (cum.reshape(-1)[flat] - counts.reshape(-1)[flat])
    cell_id = first_query(flat, groups * nb)
    return Queries(bucket.reshape(-1), cell_id[flat], rank, cell_id)


def key_spans(ids: Tensor, keys: Tensor, cells: int) -> tuple[Tensor, Tensor]:
    """(cells,) smallest key and key span (largest - smallest) of the pairs in each cell (``ids``: (P,) cells)."""
    low = keys.new_zeros(cells).scatter_reduce(0, ids, keys, "amin", include_self=False)
    span = keys.new_zeros(cells).scatter_reduce(0, ids, keys, "amax", include_self=False) - low
    return low, span


_STEPS = 34


def radix_pass(
    ids: Tensor, keys: Tensor, low: Tensor, span: Tensor, q_cell: Tensor, q_rank: Tensor, static: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One radix-selection pass over P pairs in ``cells = len(low)`` cells.

    ids: (P,) cell of each pair; keys: (P,) int64 order keys; low, span: (cells,) from :func:`key_spans`; q_cell,
    q_rank: (Q,) each query's cell and rank in it. Each cell's key range is split into ``2**REFINE_BITS`` parts; the
    part holding each query's rank becomes its new cell. Returns the queries' new cells and ranks and the (P,) new
    cell of every pair (Q: in no query's part).
    """
    cells = len(low)
    steps = torch.arange(_STEPS, device=keys.device)
    shift = ((span[:, None] >> steps) >= (1 << REFINE_BITS)).sum(1)
    sub = (ids << REFINE_BITS) + ((keys - low[ids]) >> shift[ids])
    sub_counts = histogram(sub, cells << REFINE_BITS, static=static).reshape(cells, -1)
    sub_cum = sub_counts.cumsum(1)
    digit = torch.searchsorted(sub_cum[q_cell], q_rank[:, None], right=True)[:, 0]
    digit.clamp_(max=(1 << REFINE_BITS) - 1)
    q_flat = (q_cell << REFINE_BITS) + digit
    q_rank = q_rank - (sub_cum.reshape(-1)[q_flat] - sub_counts.reshape(-1)[q_flat])
    sub_id = first_query(q_flat, cells << REFINE_BITS)
    return sub_id[q_flat], q_rank, sub_id[sub]


def lowest_pixels(ids: Tensor, pixels: Tensor, cells: int) -> Tensor:
    """(cells,) the smallest of the (P,) ``pixels`` in each cell (``ids``: (P,) cells), -1 where a cell has none."""
    first = torch.full((cells,), -1, dtype=torch.long, device=pixels.device)
    return first.scatter_reduce(0, ids, pixels, "amin", include_self=False)
