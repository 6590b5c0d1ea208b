"""Preflight rows about the machine and the photographs: a recipe's precision on a host without a GPU, the download a
teacher's fix names, and the photographs that the image rules of ``hf_distill.data.images`` change.

A recipe for a GPU cluster (``bf16: true``) cannot even be parsed on a login node: transformers refuses bf16 without a
GPU. ``parse_for_preflight`` parses it with mixed precision off instead and returns the refusal as one report row, so
that the preflight checks everything else it can on that machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from hf_distill.data.images import LARGE_IMAGE_PIXELS, displayed_size, exif_orientation

__all__ = ["PRECISION_REFUSALS", "download_hint", "evaluation_rows", "parse_for_preflight", "photograph_rows"]

# transformers' refusals of a mixed precision the host cannot run (TrainingArguments.__post_init__).
PRECISION_REFUSALS = ("doesn't support bf16", "fp16 mixed precision requires a GPU", "--fp16 requires")
_CONVERTED_MODES = {"RGBA": "alpha dropped", "LA": "alpha dropped", "PA": "alpha dropped", "P": "palette expanded",
                    "L": "greyscale", "1": "greyscale", "CMYK": "CMYK converted", "I;16": "16-bit scaled to 8",
                    "I;16B": "16-bit scaled to 8", "I": "16-bit scaled to 8", "F": "float greyscale"}
MAX_NAMED = 3


def parse_for_preflight(argv: list[str], parse: Callable[[list[str]], tuple], row: Callable[..., Any]) -> tuple:
    """``parse(argv)``; when transformers refuses the recipe's mixed precision on this host, ``parse`` again with
    ``--bf16 false --fp16 false`` and return the refusal as a row. Returns ``(model_args, data_args, args, rows)``.

    ``row(check, status, result, fix)`` builds a report row (the preflight's ``CheckResult``).
    """
    try:
        return (*parse(argv), [])
    except ValueError as error:
        message = str(error)
        if not any(refusal in message for refusal in PRECISION_REFUSALS):
            raise
    parsed = parse([*argv, "--bf16", "false", "--fp16", "false", "--bf16_full_eval", "false",
                    "--fp16_full_eval", "false"])
    wanted = "bf16" if "bf16" in message else "fp16"
    result = (f"the recipe trains in {wanted}, which this machine cannot (transformers: "
              f"\"{message.splitlines()[0]}\"); everything else was checked in float32 here")
    fix = ("nothing, if the run goes to a GPU node (run the preflight there to check the precision and the real step); "
           f"to train here, pass --{wanted} false (or --use_cpu on a CPU with {wanted})")
    return (*parsed, [row("precision", "WARN", result, fix)])


def download_hint(name: str, genpercept_unets: dict[str, str], repositories: dict[str, Any], base: str,
                  resolved: str) -> str:
    """What a fix row tells a user to download for a model named ``name``: the repositories themselves (a
    GenPercept alias names its UNet repository and its base), never an alias. ``resolved``: the name's Hub id."""
    if name in genpercept_unets:
        unets = repositories[genpercept_unets[name]]
        base_repo = repositories[base].hub_id if base in repositories else base
        return f"`hf download {unets.hub_id}` and `hf download {base_repo}`"
    return f"`hf download {resolved}`"


def photograph_rows(source: Any, open_image: Callable[[Any], Image.Image], *, global_crop_size: int,
                    examples: int, row: Callable[..., Any]) -> Iterable[Any]:
    """One "photographs" row over the first ``examples`` training examples (headers only): the images shown rotated
    (EXIF), converted (alpha, palette, greyscale, CMYK, 16-bit), smaller than ``global_crop_size`` (upsampled) and
    very large (``LARGE_IMAGE_PIXELS``, decoded whole), by name."""
    found: dict[str, list[str]] = {"EXIF-rotated (read upright)": [], "converted to RGB": [],
                                   f"smaller than the {global_crop_size}-pixel global view (upsampled)": [],
                                   f"above {LARGE_IMAGE_PIXELS // 1_000_000} megapixels (decoded whole)": []}
    keys = list(found)
    read = 0
    for index, example in enumerate(itertools.islice(iter(source), examples)):
        field_ = example["image"]
        name = Path((field_.get("path") if isinstance(field_, dict) else None) or str(index)).name
        try:
            with open_image(field_) as image:
                width, height = displayed_size(image)
                if exif_orientation(image) != 1:
                    found[keys[0]].append(name)
                if image.mode in _CONVERTED_MODES:
                    found[keys[1]].append(f"{name} ({_CONVERTED_MODES[image.mode]})")
        except Exception:  # noqa: BLE001  (the training data row reports unreadable files)
            continue
        read += 1
        if min(width, height) < global_crop_size:
            found[keys[2]].append(f"{name} {width}x{height}")
        if width * height > LARGE_IMAGE_PIXELS:
            found[keys[3]].append(f"{name} {width}x{height}")
    if read == 0:
        return
    parts = [f"{what}: {len(names)} ({', '.join(names[:MAX_NAMED])}{', ...' if len(names) > MAX_NAMED else ''})"
             for what, names in found.items() if names]
    if not parts:
        yield row("photographs", "ok", f"{read} sampled images: upright, RGB, at least {global_crop_size} pixels a side")
        return
    small = bool(found[keys[2]])
    yield row("photographs", "WARN" if small else "ok", f"{read} sampled images; " + "; ".join(parts),
              "upsampled images teach the student blur: use larger photos or a smaller --global_crop_size"
              if small else "")


def evaluation_rows(samples: Any, row: Callable[..., Any], *, scanned: int = 32) -> Iterable[Any]:
    """The "evaluation" row of an ``EvalSampleDataset``: the first ``scanned`` samples are read; those that cannot
    be scored (``EvalSample.error``: unreadable, wrong size, no valid pixel) are named. FAIL when none of them can."""
    inner = getattr(samples, "samples", None)
    bad, first_valid, read = [], None, 0
    for index in range(min(scanned, len(samples))):
        sample = inner[index] if inner is not None else None
        if sample is not None and sample.error is not None:
            bad.append(sample.error)
            continue
        valid = int((samples[index]["reference"] > 0).sum())
        read += 1
        if valid == 0:
            bad.append(f"{getattr(sample, 'name', index)}: no valid depth pixel")
        elif first_valid is None:
            first_valid = valid
    named = f"; {len(bad)} of the first {min(scanned, len(samples))} cannot be scored and are skipped: {bad[0]}" \
        if bad else ""
    if first_valid is None:
        yield row("evaluation", "FAIL", f"{len(samples)} samples, none of the first {min(scanned, len(samples))} "
                  f"has a valid depth pixel{named}", "check the ground truth's declaration (--depth_column and units, "
                  "or --eval_gt_kind / --eval_gt_scale / --eval_gt_invalid)")
        return
    yield row("evaluation", "WARN" if bad else "ok",
              f"{len(samples)} samples with depth ({first_valid} valid pixels in the first scored){named}",
              "fix or remove them to score every sample" if bad else "")
