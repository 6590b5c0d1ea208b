"""Batch assembly for view samples (see `hf_distill.data.views`)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["collate_views"]


def collate_views(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack view samples into a batch.

    Returns global_view (B, 3, G, G), local_views (B, P, 3, L, L), boxes (B, P, 4) in region pixels,
    region_size (B,), global_boxes (B, P, 4) = boxes * G / S in student global-view pixels,
    skipped (B,) long, stream_position / stream_worker (B,) long for streamed samples, and depth (B, G, G) float32 / depth_valid (B, G, G) bool when the samples have depth.
    With depth resampled as the views (``ViewSampler(view_depth=True)``): view_depth (B, G, G), local_depth (B, P, L, L).
    """
    if not samples:
        raise ValueError("collate_views needs at least one sample")
    has_depth = ["depth" in s for s in samples]
    if any(has_depth) and not all(has_depth):
        raise ValueError("cannot batch samples with and without depth")
    batch = {
        "global_view": torch.stack([torch.as_tensor(s["global_view"], dtype=torch.float32) for s in samples]),
        "local_views": torch.stack([torch.as_tensor(s["local_views"], dtype=torch.float32) for s in samples]),
        "boxes": torch.stack([torch.as_tensor(s["boxes"], dtype=torch.float32) for s in samples]),
        "region_size": torch.tensor([float(s["region_size"]) for s in samples], dtype=torch.float32),
        "skipped": torch.tensor([int(s.get("skipped", 0)) for s in samples], dtype=torch.long),
    }
    if "stream_position" in samples[0]:  # streamed samples: where each came from, for exact resume
        batch["stream_position"] = torch.tensor([s["stream_position"] for s in samples], dtype=torch.long)
        batch["stream_worker"] = torch.tensor([s["stream_worker"] for s in samples], dtype=torch.long)
    global_size = batch["global_view"].shape[-1]
    batch["global_boxes"] = batch["boxes"] * (global_size / batch["region_size"])[:, None, None]
    if all(has_depth):
        batch["depth"] = torch.stack([torch.as_tensor(s["depth"], dtype=torch.float32) for s in samples])
        batch["depth_valid"] = torch.stack([torch.as_tensor(s["depth_valid"], dtype=torch.bool) for s in samples])
    for key in ("view_depth", "local_depth"):
        if key in samples[0]:
            batch[key] = torch.stack([torch.as_tensor(s[key], dtype=torch.float32) for s in samples])
    return batch
