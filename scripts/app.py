#!/usr/bin/env python
"""Try a student beside its teacher in the browser (Gradio), or write that page as a Hugging Face Space folder.

    python scripts/app.py --student output/demo                          # demo student vs the demo teacher
    python scripts/app.py --teacher depthanything-large --student you/your-student --port 7860
    python scripts/app.py --teacher depthanything-large --student you/your-student --write_space space/

Models are aliases, Hub ids or local folders that ``pipeline("depth-estimation")`` loads. Needs the ``app`` extra
(``pip install -e ".[app]"``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from hf_distill.app import DepthComparison, build_app, example_images, write_space


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="demo-teacher", help="teacher: alias, Hub id or folder")
    parser.add_argument("--student", required=True, help="student: alias, Hub id or folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 to share on a network)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free)")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--write_space", metavar="DIR", default=None,
                        help="write a Hugging Face Space folder (app.py, requirements.txt, README.md) instead of "
                             "serving; use Hub ids for --teacher and --student")
    parser.add_argument("--license", default=None, help="the Space's licence (default: the student card's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_space:
        folder = write_space(args.write_space, args.teacher, args.student, title=args.title, license=args.license)
        print(f"Space folder written to {folder}/: upload it with `hf upload SPACE_ID {folder} --repo-type space`")
        return 0
    try:
        comparison = DepthComparison(args.teacher, args.student, device=args.device)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    page = build_app(comparison, examples=example_images(tempfile.mkdtemp(prefix="hf_distill_examples_")),
                     title=args.title)
    page.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
