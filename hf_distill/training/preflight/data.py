"""Preflight checks of the data: the training source opens and decodes, and the view settings fit its images."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hf_distill.data import ViewSampler
from hf_distill.data.images import displayed_size
from hf_distill.data.views import open_image, undecoded_images
from hf_distill.training.data import build_training_source
from hf_distill.training.preflight.host import photograph_rows
from hf_distill.training.preflight.report import FAIL, PASS, WARN, CheckResult, PreflightContext, error_summary

SAMPLE_EXAMPLES = 16  # training examples read by the data check


def check_training_data(ctx: PreflightContext) -> Iterable[CheckResult]:
    """The training source opens and a sample of its examples decodes (count, sizes, broken files)."""
    data_args, args = ctx.data_args, ctx.args
    try:
        source = undecoded_images(build_training_source(data_args, args))
    except Exception as error:  # noqa: BLE001
        yield CheckResult("training data", FAIL, error_summary(error), "fix --dataset_dir / --dataset_name")
        return
    count = len(source) if hasattr(source, "__len__") else None
    sizes, broken = [], []
    for index, example in enumerate(itertools.islice(iter(source), SAMPLE_EXAMPLES)):
        try:
            with open_image(example["image"]) as image:
                image.load()
                sizes.append(displayed_size(image))
        except Exception as error:  # noqa: BLE001
            field_ = example["image"]
            name = (field_.get("path") if isinstance(field_, dict) else None) or example.get("__key__") or index
            broken.append(f"cannot decode {name}: {error_summary(error)}")
    ctx.facts["image_sizes"] = sizes
    read = len(sizes) + len(broken)
    what = f"{count} examples" if count is not None else "streamed (length unknown)"
    if read == 0:
        yield CheckResult("training data", FAIL, f"{what}: no example could be read", "point it at images")
        return
    size_text = ""
    if sizes:
        shorts = [min(w, h) for w, h in sizes]
        size_text = f"; sizes {min(sizes)}..{max(sizes)} (short side {min(shorts)}..{max(shorts)})"
    text = f"{what}; read {read}: {len(broken)} broken{size_text}"
    if len(broken) == read:
        yield CheckResult("training data", FAIL, f"{text}; {broken[0]}", "every sampled image is unreadable")
    elif broken:
        yield CheckResult("training data", WARN, f"{text}; {broken[0]}",
                          "broken images are skipped and counted during training; remove them to train on all")
    else:
        yield CheckResult("training data", PASS, text)
    yield from photograph_rows(source, open_image, global_crop_size=data_args.global_crop_size,
                               examples=SAMPLE_EXAMPLES, row=CheckResult)


def check_views(ctx: PreflightContext) -> Iterable[CheckResult]:
    """The view settings fit the sampled images."""
    sizes = ctx.facts.get("image_sizes")
    if not sizes:
        yield CheckResult("views", WARN, "no image read: not checked", "see the training data row")
        return
    d = ctx.data_args
    shorts = [min(w, h) for w, h in sizes]
    problems = []
    try:
        sampler = ViewSampler(d.global_crop_size, d.local_crop_size, d.num_local_patches, d.min_region,
                              d.min_local_crop, seed=ctx.args.seed)
        for index, (width, height) in enumerate(sizes):
            sampler.sample_geometry(width, height, epoch=0, index=index)
    except Exception as error:  # noqa: BLE001
        yield CheckResult("views", FAIL, error_summary(error), "fix the view flags (--global_crop_size, ...)")
        return
    if d.min_region > max(shorts):
        problems.append((f"--min_region {d.min_region} is larger than every sampled image (short side at most "
                         f"{max(shorts)}): every region is the whole image",
                         f"lower --min_region to at most {min(shorts)} to draw regions of varied scale"))
    if d.min_local_crop is not None and d.min_local_crop >= min(shorts):
        problems.append((f"--min_local_crop {d.min_local_crop} >= the smallest short side {min(shorts)}: patches "
                         "cannot zoom in there", f"lower --min_local_crop below {min(shorts) // 2}"))
    if d.global_crop_size > max(shorts):
        problems.append((f"--global_crop_size {d.global_crop_size} upsamples every sampled image (short side at most "
                         f"{max(shorts)})", "use larger images or a smaller --global_crop_size"))
    if not problems:
        yield CheckResult("views", PASS, f"global {d.global_crop_size}, {d.num_local_patches} patches of "
                          f"{d.local_crop_size}, regions >= min({d.min_region}, short side) fit the "
                          f"{len(sizes)} sampled images")
    for result, fix in problems:
        yield CheckResult("views", WARN, result, fix)
