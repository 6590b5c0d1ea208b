"""The median/MAD engine: exact per-context statistics of depth maps, and the normalised L1 over them.

Maps are ``(B, H, W)``. A context is a set of valid pixels of one image; a map is normalised over it as
``(d - med) / (mad + 1e-6)`` with ``med`` the lower median (torch.median's convention: the element of
rank ``(n - 1) // 2`` in ascending order) and ``mad`` the mean absolute deviation from it. How an image
splits into contexts at each HDN level is a :class:`ContextFamily` (the registry is ``losses/contexts.py``);
this module never looks at a family's name.

The statistics are exact but no map is sorted. Each valid pixel falls in one of ``2**bits`` value
buckets of its image (blocks of the float's order-preserving integer key, see :class:`_Keyed`). Per
(context, bucket) pixel counts and value sums locate the bucket holding each median and give the MAD in
closed form; the pixels of the median buckets are narrowed down by histograms of their next key bits
(radix selection) until the median is isolated. HDN contexts nest across levels, so the histograms are
built once at the finest level and summed into the coarser ones, and per-pixel look-ups go through the
pixel's finest context. Student and teacher go through every step together, stacked as 2B images, to
halve the number of tensor operations; only the student's values carry a gradient, and the loss has a
hand-written backward. Gradients equal those of the direct computation (torch.median passes its
gradient to the median pixel).

On accelerators (:data:`STATIC_SHAPES`) nothing here makes the host wait, without a mask: every shape is fixed by
the input's shape, loops have fixed trip counts and no Python branch reads a tensor. On CPU, where the host is the
device and such reads wait for nothing, the engine drops the pixels a selection pass has ruled out (keeping the
later passes small) and skips passes and key transforms the data does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

EPS = 1e-6

_MAX_BUCKET_BITS = 12
_HISTOGRAM_BUDGET_BITS = 22  # at most 2**22 (fine context, bucket) cells per histogram
_REFINE_BITS = 8  # key bits resolved per radix-selection pass
_REFINE_PASSES = 4  # int32 keys: a cell's key span < 2**32 shrinks below 2**24, 2**16, 2**8, then to one key

_DUMP_CELLS = 256  # pairs outside the chosen cells are spread over this many dump cells (no single atomic hot spot)

STATIC_SHAPES: bool | None = None
"""Whether intermediate shapes are fixed by the input's shape (no host synchronisation): None = on accelerators."""


def _static(device: torch.device) -> bool:
    return device.type != "cpu" if STATIC_SHAPES is None else STATIC_SHAPES


def _count(index: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """(N,) int indices in [0, size) -> (size,) int64 occurrences, or sums of the (N,) float ``weights``.

    ``bincount`` (the fastest on CPU) reads its input's range back to the host on CUDA.
    """
    if not _static(index.device):
        return torch.bincount(index, weights=weights, minlength=size)
    if weights is not None:
        return weights.new_zeros(size).index_add_(0, index, weights)
    index = index.long()
    return torch.zeros(size, dtype=torch.long, device=index.device).scatter_add_(
        0, index, torch.ones(1, dtype=torch.long, device=index.device).expand_as(index)
    )

@dataclass(frozen=True)
class _Valid:
    """The valid pixels of a batch, flattened in (image, row, column) order."""

    index: Tensor | None  # (M,) int64 positions in the flattened batch; None when every pixel is valid
    image: Tensor | None  # (M,) int64 image of each valid pixel; None when every pixel is valid
    count: Tensor  # (B,) int64 valid pixels per image
    mask: Tensor | None  # (B, H*W) bool
    pixels: int  # H*W

    def repeat(self, copies: int) -> _Valid:
        """The valid pixels of ``copies`` stacked copies of the batch."""
        if self.index is None:
            return _Valid(None, None, self.count.repeat(copies), None, self.pixels)
        batch = len(self.count)
        index = torch.cat([self.index + i * batch * self.pixels for i in range(copies)])
        image = torch.cat([self.image + i * batch for i in range(copies)])
        return _Valid(index, image, self.count.repeat(copies), self.mask.repeat(copies, 1), self.pixels)

    def take(self, x: Tensor) -> Tensor:
        """(B, H*W) dense tensor (or any tensor of that many elements) -> (M,) values at the valid pixels."""
        flat = x.reshape(-1)
        return flat if self.index is None else flat.index_select(0, self.index)

    def per_image_constant(self, values: Tensor) -> Tensor:
        """(B,) per-image values -> (M,) the value of each valid pixel's image."""
        if self.image is None:
            return values[:, None].expand(-1, self.pixels).reshape(-1)
        return values[self.image]

    def scatter(self, values: Tensor, shape: torch.Size) -> Tensor:
        """(M,) values -> dense tensor of ``shape`` holding zeros at invalid pixels."""
        if self.index is None:
            return values.reshape(shape)
        return values.new_zeros(shape.numel()).index_copy(0, self.index, values).reshape(shape)

    def per_image(self, values: Tensor) -> Tensor:
        """(M,) values -> (B,) float64 sums per image."""
        if self.image is None:
            return values.reshape(len(self.count), -1).sum(1).double()
        return values.new_zeros(len(self.count), dtype=torch.float64).index_add(0, self.image, values.double())


def _valid_pixels(mask: Tensor | None, batch: int, pixels: int, device: torch.device) -> _Valid:
    if mask is None:
        return _Valid(None, None, torch.full((batch,), pixels, device=device), None, pixels)
    flat = mask.reshape(batch, pixels)
    index = flat.reshape(-1).nonzero().squeeze(1)
    return _Valid(index, torch.div(index, pixels, rounding_mode="floor"), flat.sum(1), flat, pixels)


def _order_keys(x: Tensor) -> Tensor:
    """int32 keys ordered like the float32 values: negative floats get their magnitude bits flipped."""
    bits = x.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _key_values(keys: Tensor) -> Tensor:
    """Inverse of :func:`_order_keys`."""
    return (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(torch.float32)


@dataclass(frozen=True)
class _Keyed:
    """One map's valid values and their per-image value buckets.

    Buckets are blocks of ``2**shift`` consecutive order keys (fewer than ``2**bits`` per image), so they
    are non-decreasing in the value. The keys of values tiny next to the image's largest magnitude (below
    2**-24 of it) are merged into one first, so that zeros or a few negative values do not spread the
    buckets over the hundreds of binades around zero.
    """

    values: Tensor  # (M,) float32
    bucket: Tensor  # (M,) int32, offset by the ``base`` of the pixel's image
    base: Tensor  # (B,) int32
    low: Tensor  # (B,) smallest valid value per image (0 for an image without valid pixels)
    high: Tensor  # (B,) largest valid value per image


def _key_range(keys: Tensor, valid: _Valid) -> tuple[Tensor, Tensor]:
    """(B,) smallest and largest key over each image's valid pixels (0 for an image without any)."""
    if valid.mask is None:
        return keys.aminmax(dim=1)
    info = torch.iinfo(torch.int32)
    empty = valid.count == 0
    kmin = keys.masked_fill(~valid.mask, info.max).amin(1).masked_fill(empty, 0)
    kmax = keys.masked_fill(~valid.mask, info.min).amax(1).masked_fill(empty, 0)
    return kmin, kmax


def _keyed(x: Tensor, valid: _Valid, bits: int, base: Tensor) -> _Keyed:
    """Buckets of the valid values of (B, H, W) maps, offset by ``base`` (B,) per image."""
    batch = x.shape[0]
    keys = x.detach().reshape(batch, -1).contiguous().view(torch.int32)
    static = _static(x.device)
    if static:  # the order keys of non-negative floats are their raw bits: skip the pass where that is free to see
        keys = _order_keys(keys.view(torch.float32))
    kmin, kmax = _key_range(keys, valid)
    if not static and bool((kmin < 0).any()):
        keys = _order_keys(keys.view(torch.float32))
        kmin, kmax = _key_range(keys, valid)
    low, high = _key_values(kmin), _key_values(kmax)
    zone = _order_keys(torch.maximum(low.abs(), high.abs()) * 2.0**-24)
    zone = torch.where(kmin < zone, zone, 0)[:, None]  # 0: a no-op below
    if static or bool((zone > 0).any()):
        keys = keys - keys.clamp(-zone, zone)
        kmin, kmax = kmin - kmin.clamp(-zone[:, 0], zone[:, 0]), kmax - kmax.clamp(-zone[:, 0], zone[:, 0])
    steps = torch.arange(33, device=x.device)
    span = (kmax.long()[:, None] >> steps) - (kmin.long()[:, None] >> steps)
    shift = (span >= (1 << bits)).sum(1).int()
    bucket = (keys >> shift[:, None]) - ((kmin >> shift) - base)[:, None]
    return _Keyed(valid.take(x), valid.take(bucket), base, low, high)


@dataclass(frozen=True)
class TeacherValues:
    """What a :class:`ContextFamily` sees of the teacher maps of a batch."""

    maps: Tensor  # (B, H, W) float32, no graph
    keyed: _Keyed  # its values at the valid pixels, with their value buckets
    valid: _Valid  # the valid pixels
    bits: int  # value buckets per image: 2**bits

    @property
    def low(self) -> Tensor:
        """(B,) smallest valid value per image (0 for an image without valid pixels)."""
        return self.keyed.low

    @property
    def high(self) -> Tensor:
        """(B,) largest valid value per image (0 for an image without valid pixels)."""
        return self.keyed.high

    def quantiles(self, bins: int) -> Tensor:
        """(B, bins - 1) ``torch.quantile(valid values, i / bins)`` for i = 1 .. bins - 1 (linear interpolation),
        by exact selection; 0 for an image without valid pixels."""
        keyed, valid = self.keyed, self.valid
        batch, device = len(valid.count), valid.count.device
        nb = 1 << self.bits
        if len(keyed.values) == 0:  # no valid pixel in the batch
            return torch.zeros(batch, bins - 1, device=device)
        local = torch.arange(batch, device=device, dtype=torch.int32) * nb - keyed.base
        cell = valid.per_image_constant(local) + keyed.bucket
        counts = _count(cell, batch * nb).reshape(batch, nb)
        # torch.quantile's rank q * (n - 1) is exact in float32 here since q = i / bins is dyadic.
        scaled = torch.arange(1, bins, device=device)[None, :] * (valid.count[:, None] - 1).clamp(min=0)
        below = torch.div(scaled, bins, rounding_mode="floor")
        remainder = scaled - below * bins
        ranks = torch.cat([below, below + (remainder > 0).long()], 1)
        tree = _Tree(torch.arange(batch, device=device)[:, None], batch)
        selection = _select_ranks(keyed.values, cell, counts, tree, ranks)
        picked = keyed.values[selection.pixel.clamp(min=0)].reshape(batch, 2, bins - 1)
        edges = torch.lerp(picked[:, 0], picked[:, 1], remainder.float() / bins)
        return torch.where(valid.count[:, None] > 0, edges, 0.0)


@dataclass(frozen=True)
class ContextFamily:
    """How an image splits into the contexts of the HDN levels (one entry of ``losses.contexts.CONTEXT_FAMILIES``).

    ``fine_contexts(teacher, side)`` gives the (B, H*W) int32 context of every pixel at the finest level normalised
    over (meaningful at valid pixels): a point of an ``axes``-dimensional grid of side ``side = 2**finest level``,
    row-major, in ``[0, side**axes)``. The context of a pixel at a coarser level k is that point's coordinates
    shifted right by ``finest - k``, so level k has ``2**(axes * k)`` contexts and contexts nest across levels:
    ``axes=1`` for 2^k value bins, ``axes=2`` for a 2^k x 2^k grid. ``grid`` declares that the fine contexts are
    the cells of the regular side x side grid of the image, cell (i, j) covering rows
    ``[floor(i H / side), floor((i + 1) H / side))`` and likewise columns: when side divides H and W and every
    pixel is valid, the engine then works on blocks of the maps instead of per-pixel look-ups.
    """

    fine_contexts: Callable[[TeacherValues, int], Tensor]
    axes: int = 1
    grid: bool = False
    help: str = ""


def _whole_image(teacher: TeacherValues, side: int) -> Tensor:
    batch, height, width = teacher.maps.shape
    return torch.zeros(1, 1, dtype=torch.int32, device=teacher.maps.device).expand(batch, height * width)


# Level 0 of every family: one context per image.
_WHOLE_IMAGE = ContextFamily(_whole_image)


@dataclass(frozen=True)
class _Tree:
    """How fine contexts form the groups (the contexts at every level) of a batch."""

    parents: Tensor  # (F, L) the group of each fine context at each level
    groups: int  # G

    def to_groups(self, fine_table: Tensor) -> Tensor:
        """(F, ...) per-fine-context sums -> (G, ...) sums over the fine contexts of each group."""
        table = fine_table.new_zeros(self.groups, *fine_table.shape[1:])
        for level in range(self.parents.shape[1]):
            table = table.index_add(0, self.parents[:, level], fine_table)
        return table

    def repeat(self, copies: int) -> _Tree:
        """The tree of ``copies`` stacked batches (fine contexts and groups numbered copy by copy)."""
        parents = torch.cat([self.parents + i * self.groups for i in range(copies)])
        return _Tree(parents, copies * self.groups)


def _context_tree(axes: int, fine_level: int, levels: list[int], batch: int, device: torch.device) -> _Tree:
    """Tree of a batch: per image C_fine = side**axes fine contexts and the contexts of ``levels`` (C_all in all).

    A fine context is a point of an ``axes``-dimensional grid of side ``2**fine_level`` (row-major index); its
    context at level k is that point's coordinates shifted right by ``fine_level - k`` (see :class:`ContextFamily`).
    """
    side = 1 << fine_level
    fine = torch.arange(side**axes, device=device)
    coordinates = [(fine // side**axis) % side for axis in reversed(range(axes))]  # most significant first
    columns, c_all = [], 0
    for level in levels:
        shift = fine_level - level
        parent = torch.zeros_like(fine)
        for coordinate in coordinates:
            parent = parent * (1 << level) + (coordinate >> shift)
        columns.append(c_all + parent)
        c_all += 1 << (axes * level)
    parents = torch.stack(columns, 1)  # (C_fine, L)
    images = torch.arange(batch, device=device)
    return _Tree((images[:, None, None] * c_all + parents).reshape(batch * len(fine), -1), batch * c_all)


@dataclass(frozen=True)
class _Selection:
    pixel: Tensor  # (Q,) index of a pixel holding each queried rank (-1 for a query on an empty group)
    bucket: Tensor  # (Q,) its bucket
    pair_group: Tensor  # (P,) group of every (pixel, group) pair in a queried (group, bucket); >= G: no pair
    pair_pixel: Tensor  # (P,) int64


def _first_query(chosen: Tensor, size: int) -> Tensor:
    """(size,) table: the smallest of the Q queries that chose each cell (``chosen``: (Q,) cells), Q where none did."""
    queries = len(chosen)
    table = torch.full((size,), queries, dtype=torch.long, device=chosen.device)
    return table.scatter_reduce_(0, chosen, torch.arange(queries, device=chosen.device), "amin")


def _select_ranks(values: Tensor, cell: Tensor, counts: Tensor, tree: _Tree, ranks: Tensor) -> _Selection:
    """Exact order statistics: a pixel holding the 0-based ascending rank ``ranks[g, j]`` of every group g.

    values: (M,) pixel values; cell: (M,) int32 fine context * nb + bucket, buckets non-decreasing in the
    value; counts: (G, nb) int64 pixels per (group, bucket); ranks: (G, k). Queries are numbered group by group
    (Q = G * k); a query on an empty group returns pixel -1.
    """
    groups, nb = counts.shape
    bits = nb.bit_length() - 1
    static = _static(values.device)
    device = values.device
    queries = ranks.numel()
    cum = counts.cumsum(1)
    q_bucket = torch.searchsorted(cum, ranks, right=True).clamp_(max=nb - 1)  # (G, k)
    q_flat = (torch.arange(groups, device=device)[:, None] * nb + q_bucket).reshape(-1)
    q_bucket = q_bucket.reshape(-1)
    q_rank = ranks.reshape(-1) - (cum.reshape(-1)[q_flat] - counts.reshape(-1)[q_flat])
    cell_id = _first_query(q_flat, groups * nb)  # (group, bucket) -> chosen cell id (a query), Q: not chosen
    q_cell = cell_id[q_flat]

    # Pixels in a chosen (group, bucket): mark the (fine context, bucket) cells below it, then pair up.
    fine_count, levels = tree.parents.shape
    if static:  # every pixel and level: a pair outside the chosen cells goes to the dump cell Q
        candidate = torch.arange(len(cell), device=device)
        cand_cell = cell.long()
    else:
        marked = torch.zeros(fine_count, nb, dtype=torch.bool, device=device)
        chosen_buckets = q_bucket.view(groups, -1)
        for level in range(levels):
            marked.scatter_(1, chosen_buckets[tree.parents[:, level]], True)
        candidate = marked.view(-1).index_select(0, cell).nonzero().squeeze(1)
        cand_cell = cell.index_select(0, candidate).long()
    cand_groups = tree.parents[cand_cell >> bits]  # (C, L)
    cand_ids = cell_id[cand_groups * nb + (cand_cell & (nb - 1))[:, None]]  # (C, L)
    if static:
        pair_cand = torch.arange(len(candidate), device=device)[:, None].expand(-1, levels).reshape(-1)
        spread = torch.arange(len(pair_cand), device=device) & (_DUMP_CELLS - 1)
        ids, pair_group = cand_ids.reshape(-1), cand_groups.reshape(-1)
        pair_group = torch.where(ids < queries, pair_group, groups + spread)
        ids = torch.where(ids < queries, ids, queries + spread)
    else:
        pair_cand, pair_level = (cand_ids < queries).nonzero(as_tuple=True)
        ids, pair_group = cand_ids[pair_cand, pair_level], cand_groups[pair_cand, pair_level]
    pair_pixel = candidate[pair_cand]

    # Radix selection: split each chosen cell's key range into 2**_REFINE_BITS parts until one key is left.
    keys = _order_keys(values.detach()[pair_pixel]).long()
    pixels, cells = pair_pixel, queries + (_DUMP_CELLS if static else 1)  # cell ids: queries, then dump cells
    steps = torch.arange(34, device=device)
    for _ in range(_REFINE_PASSES):
        low = keys.new_zeros(cells).scatter_reduce(0, ids, keys, "amin", include_self=False)
        span = keys.new_zeros(cells).scatter_reduce(0, ids, keys, "amax", include_self=False) - low
        if not static and not bool((span > 0).any()):  # every chosen cell holds one key
            break
        shift = ((span[:, None] >> steps) >= (1 << _REFINE_BITS)).sum(1)
        sub = (ids << _REFINE_BITS) + ((keys - low[ids]) >> shift[ids])
        sub_counts = _count(sub, cells << _REFINE_BITS).reshape(cells, -1)
        sub_cum = sub_counts.cumsum(1)
        digit = torch.searchsorted(sub_cum[q_cell], q_rank[:, None], right=True)[:, 0]
        digit.clamp_(max=(1 << _REFINE_BITS) - 1)
        q_flat = (q_cell << _REFINE_BITS) + digit
        q_rank = q_rank - (sub_cum.reshape(-1)[q_flat] - sub_counts.reshape(-1)[q_flat])
        sub_id = _first_query(q_flat, cells << _REFINE_BITS)
        q_cell, ids = sub_id[q_flat], sub_id[sub]
        if static:
            ids = torch.where(ids < queries, ids, queries + spread)
        else:
            keep = (ids < queries).nonzero().squeeze(1)
            ids, keys, pixels = ids[keep], keys[keep], pixels[keep]
    first = torch.full((cells,), -1, dtype=torch.long, device=device)
    first = first.scatter_reduce(0, ids, pixels, "amin", include_self=False)
    return _Selection(first[q_cell], q_bucket, pair_group, pair_pixel)


@dataclass(frozen=True)
class _Contexts:
    """Contexts of the valid pixels of stacked maps (student and teacher) at the levels normalised over.

    Fine contexts are numbered copy by copy (student images, then teacher images), C_fine per image; a
    pixel's cell is fine context * 2**bits + bucket.
    """

    fine: Tensor | None  # (M,) int32 the student's fine context of each pixel (the teacher's is + F/2)
    cell_base: Tensor | None  # (M,) int32 (context within the image) * 2**bits; None: one context per image
    tree: _Tree
    bits: int  # value buckets per image: 2**bits
    levels: tuple[int, ...]  # the HDN level of each column of tree.parents
    # When every pixel is valid: the shape to view the pixels in, and, when contexts are blocks of that
    # view (a spatial grid that divides the map), the shape of per-fine-context tables that broadcast.
    layout: tuple[int, ...] | None
    table_layout: tuple[int, ...] | None

    def cells(self, bucket: Tensor) -> Tensor:
        """(2M,) buckets of the stacked maps (offset per image by C_fine * 2**bits) -> (2M,) cells."""
        return bucket if self.cell_base is None else (bucket.view(2, -1) + self.cell_base).view(-1)

    def arrange(self, values: Tensor) -> Tensor:
        """Per-pixel values of both maps (2M,) or of one (M,), viewed in the shape that :meth:`per_pixel`
        results broadcast against."""
        if self.layout is None:
            return values
        return values.view(-1, *self.layout[1:])

    def per_pixel(self, group_table: Tensor, level: int, half: int | None = None) -> Tensor:
        """(G,) per-group values -> the value of each pixel's group at level index ``level``, for both maps
        or for one ``half`` (0: student, 1: teacher)."""
        fine_table = group_table[self.tree.parents[:, level]]
        if self.table_layout is not None:
            table = fine_table.view(self.table_layout)
        elif self.layout is not None and self.levels[level] == 0:  # one context per image: broadcast
            table = fine_table.view(self.layout[0], -1)[:, :1]
        else:
            halves = fine_table.view(2, -1)
            gathered = halves.index_select(1, self.fine) if half is None else halves[half].index_select(0, self.fine)
            return self.arrange(gathered.view(-1))
        return table if half is None else _halves(table)[half]

    def student_group_sums(self, values: Tensor, level: int) -> Tensor:
        """The student's values (arranged) -> (G,) sums over each group at level index ``level`` (zero for
        the teacher's groups)."""
        parents = self.tree.parents[: self.tree.parents.shape[0] // 2, level]  # the student's fine contexts
        if self.table_layout is not None:  # spatial grid blocks
            per_fine = values.sum((2, 4)).reshape(-1)
        elif self.layout is not None and self.levels[level] == 0:  # one context per image
            per_fine = values.sum(1)
            parents = parents[:: len(parents) // len(per_fine)]
        else:
            per_fine = _count(self.fine, len(parents), values.reshape(-1))
        return per_fine.new_zeros(self.tree.groups).index_add(0, parents, per_fine)


class _CellSums(torch.autograd.Function):
    """float64 sums of the stacked values per cell; the gradient flows to the student's half only."""

    @staticmethod
    def forward(ctx, student_values: Tensor, values: Tensor, cell: Tensor, size: int) -> Tensor:
        ctx.save_for_backward(cell[: len(student_values)])
        values64 = values.double()
        return values64.new_zeros(size).index_add_(0, cell, values64)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (cell,) = ctx.saved_tensors
        return grad.index_select(0, cell).float(), None, None, None


def _pick(student_values: Tensor, values: Tensor, index: Tensor) -> Tensor:
    """values[index], differentiable where the index falls in the student's half (``student_values``)."""
    count = len(student_values)
    if count == 0:
        return values[index]
    return torch.where(index < count, student_values[index.clamp(max=count - 1)], values[index])


def _median_mad(
    student_values: Tensor, values: Tensor, bucket: Tensor, contexts: _Contexts
) -> tuple[Tensor, Tensor]:
    """(G,) median and (G,) mean absolute deviation of the values over every group (0 for empty groups).

    values: (2M,) stacked values of both maps (no graph); student_values: (M,) the student's half with
    its autograd graph. With the median m in bucket b of a group: sum |x - m| = (sum above b - m * count
    above b) + (m * count below b - sum below b) + the exact deviations of the pixels inside b.
    """
    tree, nb = contexts.tree, 1 << contexts.bits
    if len(values) == 0:  # no valid pixel in the batch
        return values.new_zeros(tree.groups), values.new_zeros(tree.groups)
    fine_count = tree.parents.shape[0]
    cell = contexts.cells(bucket)
    counts = tree.to_groups(_count(cell, fine_count * nb).reshape(-1, nb))
    sums = tree.to_groups(_CellSums.apply(student_values, values, cell, fine_count * nb).reshape(-1, nb))
    count = counts.sum(1)
    rank = torch.div(count - 1, 2, rounding_mode="floor").clamp_(min=0)
    selection = _select_ranks(values, cell, counts, tree, rank[:, None])
    median = torch.where(count > 0, _pick(student_values, values, selection.pixel.clamp(min=0)), 0.0)
    median64 = median.double()

    at = selection.bucket[:, None]
    count_through = counts.cumsum(1).gather(1, at)[:, 0]
    count_below = count_through - counts.gather(1, at)[:, 0]
    cum_sums = sums.cumsum(1)
    sum_through = cum_sums.gather(1, at)[:, 0]
    sum_below = sum_through - sums.gather(1, at)[:, 0]
    above = (cum_sums[:, -1] - sum_through) - median64 * (count - count_through)
    below = median64 * count_below - sum_below
    median64 = torch.cat([median64, median64.new_zeros(_DUMP_CELLS)])  # the dump groups of the static pairs
    inside = _pick(student_values, values, selection.pair_pixel).double() - median64[selection.pair_group]
    inside = median64.new_zeros(len(median64)).index_add(0, selection.pair_group, inside.abs())[: tree.groups]
    mad = (above + below + inside) / count.clamp(min=1)
    return median, mad.float()


def _bucket_bits(fine_count: int) -> int:
    budget = _HISTOGRAM_BUDGET_BITS - max(fine_count - 1, 0).bit_length()
    return max(4, min(_MAX_BUCKET_BITS, budget))


@dataclass(frozen=True)
class ContextStatistics:
    """Student and teacher values at the valid pixels, stacked as 2B images (student first), with their
    contexts and the median and scale ``1 / (mad + eps)`` of every group."""

    student_values: Tensor  # (M,) with the student's autograd graph
    values: Tensor  # (2M,) both maps, no graph
    contexts: _Contexts
    median: Tensor  # (G,)
    scale: Tensor  # (G,)
    valid: _Valid  # the valid pixels of one map

    @property
    def levels(self) -> int:
        return len(self.contexts.levels)

    def normalized(self, level: int, half: int | None = None) -> Tensor:
        """Normalised values at level index ``level`` (arranged) of both maps (student first, no graph),
        or of one ``half``: 0 the student (with its graph), 1 the teacher."""
        values = self.values if half is None else (self.student_values, _halves(self.values)[1])[half]
        centred = self.contexts.arrange(values) - self.contexts.per_pixel(self.median, level, half)
        scale = self.contexts.per_pixel(self.scale, level, half)
        return centred * scale if centred.requires_grad else centred.mul_(scale)


def context_statistics(
    student: Tensor, teacher: Tensor, mask: Tensor | None, levels: list[int], family: ContextFamily | None
) -> ContextStatistics:
    """Contexts of ``levels`` from the (detached) teacher, and per-context statistics of both maps.

    student, teacher: (B, H, W) float32 (the teacher detached); mask: (B, H, W) bool or None; levels: HDN levels,
    each split by ``family`` (None only for ``levels == [0]``: one context per image).
    """
    batch, height, width = student.shape
    device = student.device
    valid = _valid_pixels(mask, batch, height * width, device)
    both = valid.repeat(2)
    fine_level = max(levels)
    if fine_level == 0:
        family = _WHOLE_IMAGE
    tree = _context_tree(family.axes, fine_level, levels, batch, device)
    c_fine = tree.parents.shape[0] // batch
    bits = _bucket_bits(2 * batch * c_fine)
    images = torch.arange(2 * batch, device=device, dtype=torch.int32)
    keyed = _keyed(torch.cat([student.detach(), teacher]), both, bits, images * (c_fine << bits))
    with torch.no_grad():
        parts = (keyed.values, keyed.bucket, keyed.base, keyed.low, keyed.high)
        teacher_keyed = _Keyed(*(_halves(part)[1] for part in parts))
        side = 1 << fine_level
        context = family.fine_contexts(TeacherValues(teacher, teacher_keyed, valid, bits), side)
    layout = table_layout = None
    if valid.index is None and family.grid and height % side == 0 and width % side == 0:
        layout = (2 * batch, side, height // side, side, width // side)
        table_layout = (2 * batch, side, 1, side, 1)
    elif valid.index is None:
        layout = (2 * batch, height * width)
    needs_fine = table_layout is None and (layout is None or fine_level > 0)
    fine = valid.take(context + images[:batch, None] * c_fine) if needs_fine else None
    cell_base = valid.take(context << bits) if fine_level > 0 else None
    contexts = _Contexts(fine, cell_base, tree.repeat(2), bits, tuple(levels), layout, table_layout)
    student_values = valid.take(student)
    median, mad = _median_mad(student_values, keyed.values, keyed.bucket, contexts)
    return ContextStatistics(student_values, keyed.values, contexts, median, 1.0 / (mad + EPS), valid)


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """Split stacked (student, teacher) values along dimension 0."""
    return x[: len(x) // 2], x[len(x) // 2 :]


class _PairedL1(torch.autograd.Function):
    """Per-image sums over levels and valid pixels of ``|N(student) - N(teacher)|``.

    Inputs: the student's half of the stacked values and the per-group median and scale tables. The
    hand-written backward touches the student's pixels only and sums per-context terms with one bincount (CPU) or
    index_add (autograd would also differentiate the teacher's half and scatter-add into tiny tables).
    """

    @staticmethod
    def forward(ctx, student_values: Tensor, median: Tensor, scale: Tensor, stats: ContextStatistics) -> Tensor:
        signs, sums = [], 0.0
        for level in range(stats.levels):
            norm_student, norm_teacher = _halves(stats.normalized(level))
            difference = norm_student.sub_(norm_teacher)
            signs.append(difference.sign())
            sums = sums + stats.valid.per_image(difference.abs_())
        ctx.stats, ctx.signs = stats, signs
        ctx.save_for_backward(median, scale)
        return sums

    @staticmethod
    def backward(ctx, grad_sums: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        median, scale = ctx.saved_tensors
        stats: ContextStatistics = ctx.stats
        contexts = stats.contexts
        student = contexts.arrange(stats.student_values.detach())
        weight = grad_sums.float()
        if contexts.layout is None:
            weight = stats.valid.per_image_constant(weight)
        else:
            weight = weight.reshape(-1, *[1] * (student.dim() - 1))
        grad_student = torch.zeros_like(student)
        grad_median, grad_scale = torch.zeros_like(median), torch.zeros_like(scale)
        for level, sign in enumerate(ctx.signs):
            push = sign * weight  # d loss / d normalised student value
            grad_student += push * contexts.per_pixel(scale, level, 0)
            centred = student - contexts.per_pixel(median, level, 0)
            grad_median -= scale * contexts.student_group_sums(push, level)
            grad_scale += contexts.student_group_sums(push * centred, level)
        return grad_student.reshape(-1), grad_median, grad_scale, None


def paired_l1_sums(stats: ContextStatistics) -> Tensor:
    """(B,) float64 per-image sums over levels and valid pixels of ``|N(student) - N(teacher)|``, carrying the
    student's autograd graph."""
    return _PairedL1.apply(stats.student_values, stats.median, stats.scale, stats)
