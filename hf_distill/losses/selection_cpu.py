"""Exact order statistics on CPU, where reading a tensor's value waits for nothing: the engine keeps only the pixels
of the chosen buckets and drops those that each radix pass rules out.

Same results as ``selection_static.py`` (the accelerator path) with far less work on a CPU.
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


def select_ranks_cpu(values: Tensor, cell: Tensor, counts: Tensor, parents: Tensor, ranks: Tensor) -> Selection:
    """Exact order statistics: a pixel holding the 0-based ascending rank ``ranks[g, j]`` of every group g.

    values: (M,) pixel values; cell: (M,) int32 fine context * nb + bucket, buckets non-decreasing in the value;
    counts: (G, nb) int64 pixels per (group, bucket); parents: (F, L) the group of each fine context at each level;
    ranks: (G, k). Queries are numbered group by group (Q = G * k); a query on an empty group returns pixel -1.
    Only the (pixel, group) pairs in a queried (group, bucket) are returned.
    """
    groups, nb = counts.shape
    bits = nb.bit_length() - 1
    queries = ranks.numel()
    found = locate_buckets(counts, ranks)

    # Pixels in a chosen (group, bucket): mark the (fine context, bucket) cells below it, then pair up.
    fine_count, levels = parents.shape
    marked = torch.zeros(fine_count, nb, dtype=torch.bool, device=values.device)
    chosen_buckets = found.bucket.view(groups, -1)
    for level in range(levels):
        marked.scatter_(1, chosen_buckets[parents[:, level]], True)
    candidate = marked.view(-1).index_select(0, cell).nonzero().squeeze(1)
    cand_cell = cell.index_select(0, candidate).long()
    cand_groups = parents[cand_cell >> bits]  # (C, L)
    cand_ids = found.cell_id[cand_groups * nb + (cand_cell & (nb - 1))[:, None]]  # (C, L)
    pair_cand, pair_level = (cand_ids < queries).nonzero(as_tuple=True)
    ids, pair_group = cand_ids[pair_cand, pair_level], cand_groups[pair_cand, pair_level]
    pair_pixel = candidate[pair_cand]

    keys = order_keys(values.detach()[pair_pixel]).long()
    pixels, cells = pair_pixel, queries + 1  # cell ids: the queries', then one unused cell
    q_cell, q_rank = found.cell, found.rank
    for _ in range(REFINE_PASSES):
        low, span = key_spans(ids, keys, cells)
        if not bool((span > 0).any()):  # every chosen cell holds one key
            break
        q_cell, q_rank, ids = radix_pass(ids, keys, low, span, q_cell, q_rank, static=False)
        keep = (ids < queries).nonzero().squeeze(1)
        ids, keys, pixels = ids[keep], keys[keep], pixels[keep]
    first = lowest_pixels(ids, pixels, cells)
    return Selection(first[q_cell], found.bucket, pair_group, pair_pixel)
