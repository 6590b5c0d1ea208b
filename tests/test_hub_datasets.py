"""Datasets that `datasets.load_dataset` reads (Hub ids, local parquet folders, save_to_disk folders) as training
and evaluation data: built locally from generated scenes and read through the same call a Hub id takes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DepthAnythingForDepthEstimation

import datasets
from hf_distill.data.sources import load_dataset_source
from hf_distill.data.synthetic import render_scene
from hf_distill.data.views import IterableViewDataset
from hf_distill.evaluation import EvalSample, evaluate_model
from hf_distill.models import default_image_processor, tiny_depth_config
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import run_distillation

SIZE = (48, 64)
FEATURES = datasets.Features({"rgb": datasets.Image(), "depth_map": datasets.Image(), "scene": datasets.Value("int32")})


def scenes_dataset(seeds: range) -> datasets.Dataset:
    """NYU-Depth-V2-on-the-Hub style rows: an RGB image and a float depth map in metres (PIL mode F)."""
    rows = {"rgb": [], "depth_map": [], "scene": []}
    for seed in seeds:
        scene = render_scene(seed, *SIZE)
        rows["rgb"].append(Image.fromarray(scene.image))
        rows["depth_map"].append(Image.fromarray(scene.depth.astype(np.float32), mode="F"))
        rows["scene"].append(seed)
    return datasets.Dataset.from_dict(rows, features=FEATURES)


@pytest.fixture(scope="module")
def local_datasets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hub_datasets")
    train, test = scenes_dataset(range(6)), scenes_dataset(range(100, 103))
    parquet = root / "parquet"
    (parquet / "data").mkdir(parents=True)
    for i, shard in enumerate((train.select(range(3)), train.select(range(3, 6)))):  # two shards: two streams
        shard.to_parquet(str(parquet / "data" / f"train-{i:05d}-of-00002.parquet"))
    test.to_parquet(str(parquet / "data" / "test-00000-of-00001.parquet"))
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(root / "saved_dict"))
    train.save_to_disk(str(root / "saved"))
    return {"parquet": parquet, "saved_dict": root / "saved_dict", "saved": root / "saved", "root": root}


@pytest.mark.parametrize("layout", ["parquet", "saved_dict", "saved"])
def test_local_datasets_load_with_decoded_images_and_depth_in_metres(local_datasets, layout):
    source = load_dataset_source(str(local_datasets[layout]), split="train", image_column="rgb",
                                 depth_column="depth_map")
    assert isinstance(source, datasets.Dataset) and len(source) == 6 and source.column_names == ["image", "depth"]
    example = source[4]
    assert isinstance(example["image"], Image.Image) and example["image"].size == (SIZE[1], SIZE[0])
    scene = render_scene(4, *SIZE)
    np.testing.assert_array_equal(np.asarray(example["image"]), scene.image)
    np.testing.assert_array_equal(np.asarray(example["depth"], np.float32), scene.depth)
    if layout != "saved":  # a saved DatasetDict and a parquet folder have splits, read like a Hub id's
        assert len(load_dataset_source(str(local_datasets[layout]), split="test", image_column="rgb")) == 3


class _SceneSampler:
    """Stand-in sampler recording which generated scene it saw (its mean pixel value)."""

    def __call__(self, image, depth=None, *, epoch, index):
        return {"id": round(float(np.asarray(image.convert("RGB")).mean()), 3)}


@pytest.mark.parametrize("layout", ["parquet", "saved"])
def test_streamed_dataset_splits_across_ranks_like_webdataset_shards(local_datasets, layout):
    source = load_dataset_source(str(local_datasets[layout]), streaming=True, image_column="rgb", shuffle_buffer=4)
    assert isinstance(source, datasets.IterableDataset) and source.num_shards >= 2
    everything = {s["id"] for s in IterableViewDataset(source, _SceneSampler(), rank=0, world_size=1)}
    per_rank = [{s["id"] for s in IterableViewDataset(source, _SceneSampler(), rank=r, world_size=2)} for r in (0, 1)]
    assert len(everything) == 6 and per_rank[0].isdisjoint(per_rank[1]) and per_rank[0] | per_rank[1] == everything


def test_bad_columns_and_units_are_named(local_datasets, tmp_path):
    with pytest.raises(ValueError, match=r"--dataset_name .*parquet: no column 'image' \(--image_column\); its "
                                         r"columns are \['rgb', 'depth_map', 'scene'\]"):
        load_dataset_source(str(local_datasets["parquet"]))
    with pytest.raises(ValueError, match=r"no column 'depth' \(--depth_column\)"):
        load_dataset_source(str(local_datasets["parquet"]), image_column="rgb", depth_column="depth")
    with pytest.raises(ValueError, match=r"split 'validation'"):
        load_dataset_source(str(local_datasets["parquet"]), split="validation", image_column="rgb")
    with pytest.raises(OSError, match="--dataset_name someone/not-cached"):
        load_dataset_source("someone/not-cached")  # HF_HUB_OFFLINE: a Hub id that is not cached
    # Integer depth (16-bit millimetres) has dataset-specific units: refused before any model loads.
    rows = scenes_dataset(range(2)).to_dict()
    rows["depth_map"] = [Image.fromarray((render_scene(s, *SIZE).depth * 1000).astype(np.uint16)) for s in range(2)]
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(tmp_path / "mm"))
    argv = ["--dataset_name", str(local_datasets["parquet"]), "--eval_dataset_name", str(tmp_path / "mm"),
            "--eval_dataset_split", "train",
            "--image_column", "rgb", "--depth_column", "depth_map", "--output_dir", str(tmp_path / "out"),
            "--use_cpu", "--report_to", "none"]
    with pytest.raises(ValueError, match=r"mm\[0\]: depth holds uint16 values; expected float depth in metres"):
        run_distillation(*parse_distill_args(argv))


@pytest.mark.parametrize("argv, message", [
    (["--dataset_dir", "a", "--dataset_name", "b"], "--dataset_dir and --dataset_name"),
    (["--dataset_dir", "a", "--streaming"], "--streaming applies to --dataset_name"),
    (["--dataset_name", "b", "--eval_dataset_name", "b"], "--eval_dataset_name b needs --depth_column"),
    (["--dataset_name", "b", "--eval_benchmark", "middlebury"], "--eval_benchmark must be one of nyu, kitti"),
])
def test_dataset_flag_errors(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_distill_args([*argv, "--output_dir", str(tmp_path)])


def test_training_and_evaluation_on_a_local_dataset(local_datasets, tmp_path):
    """Distil from the parquet folder's train split, evaluate on its test split during training; the evaluation
    is the protocol's numbers on those very scenes (image column and depth column, in metres)."""
    torch.manual_seed(0)
    for name, like in (("teacher", "base"), ("student", "small")):
        DepthAnythingForDepthEstimation(tiny_depth_config(like)).save_pretrained(tmp_path / name)
        default_image_processor(size=56).save_pretrained(tmp_path / name)
    argv = [
        "--teacher_models", str(tmp_path / "teacher"), "--student_arch", str(tmp_path / "student"),
        "--student_init", "random", "--dataset_name", str(local_datasets["parquet"]), "--image_column", "rgb",
        "--depth_column", "depth_map", "--eval_dataset_name", str(local_datasets["parquet"]), "--eval_strategy",
        "steps", "--eval_steps", "2", "--eval_max_depth", "20", "--per_device_eval_batch_size", "3",
        "--global_crop_size", "42", "--local_crop_size", "28", "--min_region", "40", "--batch_size", "2",
        "--num_iterations", "2", "--save_steps", "2", "--visualize_steps", "0", "--output_dir", str(tmp_path / "out"),
        "--use_cpu", "--report_to", "none", "--license", "mit",
    ]
    trainer = run_distillation(*parse_distill_args(argv))
    [logged] = [log for log in trainer.state.log_history if "eval_abs_rel" in log]
    assert logged["eval_num_samples"] == 3

    student = trainer.accelerator.unwrap_model(trainer.model).student.eval()
    samples = []
    for seed in range(100, 103):
        scene = render_scene(seed, *SIZE)
        valid = np.isfinite(scene.depth) & (scene.depth > 1e-3) & (scene.depth < 20)
        samples.append(EvalSample(f"scene {seed}", Image.fromarray(scene.image), scene.depth, valid))
    expected, _ = evaluate_model(student, trainer.processing_class, samples, min_depth=1e-3, max_depth=20.0,
                                 batch_size=3)
    assert logged["eval_abs_rel"] == pytest.approx(expected["abs_rel"], rel=1e-6)
    assert logged["eval_delta1"] == pytest.approx(expected["delta1"], rel=1e-6)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**Training data:** `parquet` (local dataset, split `train`)" in card and str(tmp_path) not in card


# ---- Hub datasets as they are today ------------------------------------------------------------------------


def test_a_loading_script_dataset_and_a_missing_split_say_what_to_do(tmp_path):
    """Stand-ins for sayakpaul/nyu_depth_v2: a loading script (datasets >= 4 refuses them), and its parquet
    conversion, which has train and validation splits but no test."""
    script = tmp_path / "nyu_depth_v2"
    script.mkdir()
    (script / "nyu_depth_v2.py").write_text("import datasets\n\nclass NYU(datasets.GeneratorBasedBuilder):\n    pass\n")
    with pytest.raises(ValueError, match=r"--dataset_name .*nyu_depth_v2 is a loading-script dataset.*add "
                                         r"--dataset_revision refs/convert/parquet"):
        load_dataset_source(str(script))
    parquet = tmp_path / "parquet"
    for split, seeds in (("train", range(2)), ("validation", range(2, 3))):
        scenes_dataset(seeds).to_parquet(str(parquet / "data" / f"{split}-00000-of-00001.parquet"))
    for streaming in (False, True):
        with pytest.raises(ValueError, match=re.escape(
                f"--eval_dataset_name {parquet} has no split 'test': its splits are ['train', 'validation']; pass "
                "one with --eval_dataset_split")):
            load_dataset_source(str(parquet), split="test", streaming=streaming, flag="--eval_dataset_name")
    ds = load_dataset_source(str(parquet), split="validation", image_column="rgb", depth_column="depth_map")
    assert len(ds) == 1 and np.asarray(ds[0]["depth"]).ndim == 2
    model_args, data_args, _ = parse_distill_args(["--eval_dataset_name", "sayakpaul/nyu_depth_v2",
                                                   "--eval_dataset_revision", "refs/convert/parquet",
                                                   "--depth_column", "depth_map",
                                                   "--dataset_revision", "main", "--use_cpu"])
    assert (data_args.eval_dataset_revision, data_args.dataset_revision) == ("refs/convert/parquet", "main")
