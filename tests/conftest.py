"""Test-wide settings (no network, quiet libraries, small thread pools) and the tiny models and data most tests share."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
# Test models are tiny: one intra-op thread per process is faster than two fighting over two cores, and the
# subprocess tests (scripts, 2-process DDP) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402  (imports after the environment above)
import torch  # noqa: E402
from transformers import DepthAnythingForDepthEstimation  # noqa: E402

from hf_distill.testing import write_image_folder, write_webdataset_shards  # noqa: E402
from hf_distill.hub import CARD_DECIMALS  # noqa: E402
from hf_distill.models import default_image_processor, tiny_depth_config  # noqa: E402

# A model-card metric is the measured value rounded to CARD_DECIMALS: off by at most half its last digit.
CARD_ROUNDING = 0.5 * 10**-CARD_DECIMALS + 1e-12


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Two tiny teachers (large-like and base-like), a small-like student folder, 8 generated images."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    for name, like in (("teacher_large", "large"), ("teacher_base", "base"), ("student", "small")):
        DepthAnythingForDepthEstimation(tiny_depth_config(like)).save_pretrained(root / name)
        default_image_processor(size=56).save_pretrained(root / name)
    data = write_image_folder(root / "images", num_images=8, size=(96, 128), seed=3)
    write_webdataset_shards(root / "shards", num_shards=2, per_shard=4, size=(96, 128), seed=4)
    return {"root": root, "data": data, "shards": root / "shards", **{n: root / n for n in ("teacher_large", "teacher_base", "student")}}


def tiny_argv(assets, output_dir, *extra: str) -> list[str]:
    """A 4-step CPU run of the tiny large-like teacher into the tiny student on the generated images."""
    return [
        "--teacher_models", str(assets["teacher_large"]), "--student_arch", str(assets["student"]),
        "--student_init", "random", "--dataset_dir", str(assets["data"]), "--output_dir", str(output_dir),
        "--global_crop_size", "56", "--local_crop_size", "42", "--min_region", "80", "--num_local_patches", "2",
        "--batch_size", "2", "--num_iterations", "4", "--checkpoint_interval", "2", "--logging_steps", "2",
        "--visualize_steps", "2", "--use_cpu", "--report_to", "none", "--seed", "0", *extra,
    ]
