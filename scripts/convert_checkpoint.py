#!/usr/bin/env python
"""Convert an original Depth Anything V2 / Distill-Any-Depth checkpoint (.pth or .safetensors; encoder under
`pretrained.*` or `backbone.*`, decoder under `depth_head.*`) into a Hugging Face model folder: config.json,
model.safetensors and preprocessor_config.json, loadable with DepthAnythingForDepthEstimation.from_pretrained.
An already-HF checkpoint is re-saved as is."""

from __future__ import annotations

import argparse
import logging
import sys

from hf_distill.models import MODEL_ALIASES, convert_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="weights file to convert (.pth or .safetensors)")
    parser.add_argument(
        "--arch",
        required=True,
        help=f"architecture of the checkpoint: one of {', '.join(MODEL_ALIASES)}, or a config.json / model folder",
    )
    parser.add_argument("--output_dir", required=True, help="folder to write the Hugging Face model into")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, format="%(message)s")
    logging.getLogger("hf_distill").setLevel(logging.INFO)  # the conversion notes
    try:
        output_dir = convert_checkpoint(args.checkpoint, args.arch, args.output_dir)
    except (OSError, ValueError) as error:
        print(f"convert_checkpoint: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(
        f"converted {args.checkpoint} (arch {args.arch}) -> {output_dir}: config.json, model.safetensors, "
        "preprocessor_config.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
