"""The median/MAD engine: exact per-context statistics of depth maps, and the normalised L1 over them.

Maps are ``(B, H, W)``. A context is a set of valid pixels of one image; a map is normalised over it as
``(d - med) / (mad + 1e-6)`` with ``med`` the lower median (torch.median's convention: the element of
rank ``(n - 1) // 2`` in ascending order) and ``mad`` the mean absolute deviation from it. How an image
splits into contexts at each HDN level is a :class:`ContextFamily` (the registry is ``losses/contexts.py``);
this module never looks at a family's name.

The statistics are exact but no map is sorted. Each valid pixel falls in one of ``2**bits`` value buckets of its
image (blocks of the float's order-preserving integer key, ``losses/value_keys.py``). Per (context, bucket) pixel
counts and value sums locate the bucket holding each median and give the MAD in closed form; the pixels of the
median buckets are narrowed down by histograms of their next key bits (radix selection, ``losses/selection.py``)
until the median is isolated. HDN contexts nest across levels, so the histograms are built once at the finest level
and summed into the coarser ones, and per-pixel look-ups go through the pixel's finest context. Student and teacher
go through every step together, stacked as 2B images, to halve the number of tensor operations; only the student's
values carry a gradient, and the loss has a hand-written backward. The gradient is that of the direct computation
with the median taken as one pixel's value: where several pixels tie at the median, the median's gradient goes to
one of them (the first in pixel order). ``torch.median``'s backward splits it evenly across the tied pixels instead;
both are valid subgradients, and they agree wherever the median is not tied.

On accelerators (:data:`STATIC_SHAPES`) nothing here makes the host wait, without a mask: every shape is fixed by
the input's shape, loops have fixed trip counts and no Python branch reads a tensor (``losses/selection_static.py``).
On CPU, where the host is the device and such reads wait for nothing, the engine drops the pixels a selection pass
has ruled out, keeping the later passes small (``losses/selection_cpu.py``), and skips passes and key transforms the
data does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hf_distill.losses.selection import Selection, histogram
from hf_distill.losses.selection_cpu import select_ranks_cpu
from hf_distill.losses.selection_static import DUMP_CELLS, select_ranks_static
from hf_distill.losses.value_keys import KeyedValues, ValidPixels, keyed_values, valid_pixels

EPS = 1e-6

_MAX_BUCKET_BITS = 12
_HISTOGRAM_BUDGET_BITS = 22  # at most 2**22 (fine context, bucket) cells per histogram

STATIC_SHAPES: bool | None = None
"""Whether intermediate shapes are fixed by the input's shape (no host synchronisation): None = on accelerators."""


def _static(device: torch.device) -> bool:
    return device.type != "cpu" if STATIC_SHAPES is None else STATIC_SHAPES


def _select_ranks(values: Tensor, cell: Tensor, counts: Tensor, tree: _Tree, ranks: Tensor) -> Selection:
    """The order statistics of :func:`~hf_distill.losses.selection_cpu.select_ranks_cpu`, on the device's path."""
    select = select_ranks_static if _static(values.device) else select_ranks_cpu
    return select(values, cell, counts, tree.parents, ranks)


@dataclass(frozen=True)
class TeacherValues:
    """What a :class:`ContextFamily` sees of the teacher maps of a batch."""

    maps: Tensor  # (B, H, W) float32, no graph
    keyed: KeyedValues  # its values at the valid pixels, with their value buckets
    valid: ValidPixels  # the valid pixels
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
        counts = histogram(cell, batch * nb, static=_static(device)).reshape(batch, nb)
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
            table.index_add_(0, self.parents[:, level], fine_table)
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
            per_fine = histogram(self.fine, len(parents), values.reshape(-1), _static(values.device))
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
    counts = tree.to_groups(histogram(cell, fine_count * nb, static=_static(values.device)).reshape(-1, nb))
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
    median64 = torch.cat([median64, median64.new_zeros(DUMP_CELLS)])  # the dump groups of the static pairs
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
    valid: ValidPixels  # the valid pixels of one map

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
    valid = valid_pixels(mask, batch, height * width, device)
    both = valid.repeat(2)
    fine_level = max(levels)
    if fine_level == 0:
        family = _WHOLE_IMAGE
    tree = _context_tree(family.axes, fine_level, levels, batch, device)
    c_fine = tree.parents.shape[0] // batch
    bits = _bucket_bits(2 * batch * c_fine)
    images = torch.arange(2 * batch, device=device, dtype=torch.int32)
    keyed = keyed_values(torch.cat([student.detach(), teacher]), both, bits, images * (c_fine << bits), _static(device))
    with torch.no_grad():
        parts = (keyed.values, keyed.bucket, keyed.base, keyed.low, keyed.high)
        teacher_keyed = KeyedValues(*(_halves(part)[1] for part in parts))
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
