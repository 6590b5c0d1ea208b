"""Test fixtures: generated scenes laid out in the on-disk formats hf_distill reads (tests, demo, benchmarks)."""

from hf_distill.testing.photos import PHOTO_CASES, write_phone_photos, write_rgbd_folder
from hf_distill.testing.layouts import (
    scene_for,
    write_eval_benchmark,
    write_image_folder,
    write_nyu_csv_layout,
    write_webdataset_shards,
)

__all__ = [
    "PHOTO_CASES",
    "scene_for",
    "write_eval_benchmark",
    "write_image_folder",
    "write_nyu_csv_layout",
    "write_phone_photos",
    "write_rgbd_folder",
    "write_webdataset_shards",
]
