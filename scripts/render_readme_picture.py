#!/usr/bin/env python
"""Render docs/assets/teacher_student.png, the README's picture: the shipped photograph, the teacher's depth and the
student's depth side by side, each through ``pipeline("depth-estimation")`` as the Gradio page shows them.

    python scripts/distill.py                                   # trains the demo student into output/demo
    python scripts/render_readme_picture.py --student output/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from hf_distill.app import DepthComparison
from hf_distill.models import EXAMPLE_PHOTO
from hf_distill.visualize import colorize_depth, make_grid

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "assets" / "teacher_student.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="demo-teacher", help="teacher: alias, Hub id or folder")
    parser.add_argument("--student", required=True, help="student: alias, Hub id or folder")
    parser.add_argument("--output", default=str(OUTPUT), help="PNG to write")
    parser.add_argument("--width", type=int, default=300, help="width of each panel in pixels")
    args = parser.parse_args(argv)

    photo = Image.open(EXAMPLE_PHOTO).convert("RGB")
    panel = (args.width, round(args.width * photo.height / photo.width))
    prediction = DepthComparison(args.teacher, args.student, device="cpu").predict(photo)
    cells = [photo.resize(panel, Image.BICUBIC),
             *(Image.fromarray(colorize_depth(depth)).resize(panel, Image.BICUBIC)
               for depth in (prediction.teacher, prediction.student))]
    grid = make_grid([cells], labels=[["photograph", "teacher", "student"]])
    grid.save(args.output, optimize=True)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
