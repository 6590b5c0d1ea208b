"""Views per second per data-loading worker (one process) on SA-1B-sized JPEGs, with and without
reduced-size JPEG decoding (PIL draft).

    python -m benchmarks.bench_data                      # 1500x2250 JPEGs, G = L = 560, 2 patches
    python -m benchmarks.bench_data --num_local_patches 0  # global view only: draft decoding applies

Patches are at most L source pixels (the teacher sees native resolution), so with local patches the
JPEG must be decoded at full resolution and both modes do the same work; draft decoding pays off
when every view is downsampled by 2x or more (global-only views, or regions much larger than G).
Rates are the best of several alternating rounds, in wall-clock time and in process CPU time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from hf_distill.data.sources import load_images
from hf_distill.data.synthetic import render_scene
from hf_distill.data.views import ViewDataset, ViewSampler


def make_jpegs(folder: Path, count: int, height: int, width: int) -> None:
    for i in range(count):
        path = folder / f"sa_{i + 1}.jpg"
        if not path.exists():
            Image.fromarray(render_scene(1000 + i, height, width).image).save(path, quality=90)


def measure(views: ViewDataset, num_views: int) -> tuple[float, float]:
    """(views/s wall clock, views/s CPU time) over `num_views` samples after one warm-up sample."""
    views[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(num_views):
        views[i]
    return num_views / (time.perf_counter() - wall), num_views / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, nargs=2, default=(1500, 2250), metavar=("H", "W"))
    parser.add_argument("--num_images", type=int, default=6)
    parser.add_argument("--num_views", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--global_crop_size", type=int, default=560)
    parser.add_argument("--local_crop_size", type=int, default=560)
    parser.add_argument("--num_local_patches", type=int, default=2)
    parser.add_argument("--min_region", type=int, default=644)
    parser.add_argument("--workdir", type=Path, default=None, help="where the JPEGs are kept (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        make_jpegs(folder, args.num_images, *args.image_size)
        source = load_images(folder)
        rates = {False: (0.0, 0.0), True: (0.0, 0.0)}
        for _ in range(args.rounds):  # alternate the modes; keep each one's best round (shared cores are noisy)
            for reduced in (False, True):
                sampler = ViewSampler(args.global_crop_size, args.local_crop_size, args.num_local_patches,
                                      args.min_region, reduced_decoding=reduced)
                wall, cpu = measure(ViewDataset(source, sampler), args.num_views)
                rates[reduced] = (max(rates[reduced][0], wall), max(rates[reduced][1], cpu))
    h, w = args.image_size
    print(f"{args.num_images} JPEGs {w}x{h}, G={args.global_crop_size} L={args.local_crop_size} "
          f"P={args.num_local_patches} min_region={args.min_region}, best of {args.rounds} rounds of "
          f"{args.num_views} views per mode")
    for reduced, label in ((False, "full decoding"), (True, "reduced decoding")):
        wall, cpu = rates[reduced]
        print(f"  {label:17s} {wall:6.1f} views/s wall   {cpu:6.1f} views/s CPU")
    print(f"  ratio reduced/full {rates[True][0] / rates[False][0]:.2f} wall   "
          f"{rates[True][1] / rates[False][1]:.2f} CPU")


if __name__ == "__main__":
    main()
