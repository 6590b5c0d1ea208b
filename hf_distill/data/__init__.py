"""Data: training sources, cross-context views, batching, and generated RGB-D scenes."""

from .collate import collate_views
from .images import open_rgb, to_rgb
from .sources import (
    load_dataset_source,
    load_images,
    load_nyu,
    load_training_source,
    load_webdataset,
    read_nyu_depth,
)
from .synthetic import SyntheticScene, render_scene
from .views import IterableViewDataset, ViewDataset, ViewSampler, build_view_dataset

__all__ = [
    "IterableViewDataset",
    "SyntheticScene",
    "ViewDataset",
    "ViewSampler",
    "build_view_dataset",
    "collate_views",
    "load_dataset_source",
    "load_images",
    "load_nyu",
    "load_training_source",
    "load_webdataset",
    "open_rgb",
    "read_nyu_depth",
    "render_scene",
    "to_rgb",
]
