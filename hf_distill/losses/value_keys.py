"""The valid pixels of a batch of maps and the order-preserving integer keys that sort their values into buckets.

Maps are ``(B, H, W)``; the median/MAD engine (``losses/median_mad.py``) works on the flat list of their valid pixels
and on value buckets: blocks of consecutive int32 keys that order like the float32 values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ValidPixels:
    """The valid pixels of a batch, flattened in (image, row, column) order."""

    index: Tensor | None  # (M,) int64 positions in the flattened batch; None when every pixel is valid
    image: Tensor | None  # (M,) int64 image of each valid pixel; None when every pixel is valid
    count: Tensor  # (B,) int64 valid pixels per image
    mask: Tensor | None  # (B, H*W) bool
    pixels: int  # H*W

    def repeat(self, copies: int) -> ValidPixels:
        """The valid pixels of ``copies`` stacked copies of the batch."""
        if self.index is None:
            return ValidPixels(None, None, self.count.repeat(copies), None, self.pixels)
        batch = len(self.count)
        index = torch.cat([self.index + i * batch * self.pixels for i in range(copies)])
        image = torch.cat([self.image + i * batch for i in range(copies)])
        return ValidPixels(index, image, self.count.repeat(copies), self.mask.repeat(copies, 1), self.pixels)

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


def valid_pixels(mask: Tensor | None, batch: int, pixels: int, device: torch.device) -> ValidPixels:
    """The valid pixels of a (B, H, W) bool ``mask`` (None: every pixel) of ``batch`` maps of ``pixels`` pixels."""
    if mask is None:
        return ValidPixels(None, None, torch.full((batch,), pixels, device=device), None, pixels)
    flat = mask.reshape(batch, pixels)
    index = flat.reshape(-1).nonzero().squeeze(1)
    return ValidPixels(index, torch.div(index, pixels, rounding_mode="floor"), flat.sum(1), flat, pixels)


def order_keys(x: Tensor) -> Tensor:
    """int32 keys ordered like the float32 values: negative floats get their magnitude bits flipped."""
    bits = x.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def key_values(keys: Tensor) -> Tensor:
    """Inverse of :func:`order_keys`."""
    return (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(torch.float32)


@dataclass(frozen=True)
class KeyedValues:
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


def _key_range(keys: Tensor, valid: ValidPixels) -> tuple[Tensor, Tensor]:
    """(B,) smallest and largest key over each image's valid pixels (0 for an image without any)."""
    if valid.mask is None:
        return keys.aminmax(dim=1)
    info = torch.iinfo(torch.int32)
    empty = valid.count == 0
    kmin = keys.masked_fill(~valid.mask, info.max).amin(1).masked_fill(empty, 0)
    kmax = keys.masked_fill(~valid.mask, info.min).amax(1).masked_fill(empty, 0)
    return kmin, kmax


def keyed_values(x: Tensor, valid: ValidPixels, bits: int, base: Tensor, static: bool) -> KeyedValues:
    """Buckets of the valid values of (B, H, W) maps, offset by ``base`` (B,) per image.

    ``static``: no Python branch reads a tensor (the accelerator path); otherwise passes the data does not need
    are skipped.
    """
    batch = x.shape[0]
    keys = x.detach().reshape(batch, -1).contiguous().view(torch.int32)
    if static:  # the order keys of non-negative floats are their raw bits: skip the pass where that is free to see
        keys = order_keys(keys.view(torch.float32))
    kmin, kmax = _key_range(keys, valid)
    if not static and bool((kmin < 0).any()):
        keys = order_keys(keys.view(torch.float32))
        kmin, kmax = _key_range(keys, valid)
    low, high = key_values(kmin), key_values(kmax)
    zone = order_keys(torch.maximum(low.abs(), high.abs()) * 2.0**-24)
    zone = torch.where(kmin < zone, zone, 0)[:, None]  # 0: a no-op below
    if static or bool((zone > 0).any()):
        keys = keys - keys.clamp(-zone, zone)
        kmin, kmax = kmin - kmin.clamp(-zone[:, 0], zone[:, 0]), kmax - kmax.clamp(-zone[:, 0], zone[:, 0])
    steps = torch.arange(33, device=x.device)
    span = (kmax.long()[:, None] >> steps) - (kmin.long()[:, None] >> steps)
    shift = (span >= (1 << bits)).sum(1).int()
    bucket = (keys >> shift[:, None]) - ((kmin >> shift) - base)[:, None]
    return KeyedValues(valid.take(x), valid.take(bucket), base, low, high)
