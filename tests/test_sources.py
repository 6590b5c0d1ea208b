"""datasets-backed training sources: NYU CSV layout (units, path resolution), image folders, webdataset."""

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from hf_distill.data.sources import (
    load_images,
    load_nyu,
    load_training_source,
    load_webdataset,
    read_nyu_depth,
    stream_split_warning,
)
from hf_distill.data.views import IterableViewDataset
from hf_distill.testing import write_image_folder, write_nyu_csv_layout, write_webdataset_shards

TINY = (16, 20)


def _rgb(path, size=(3, 2)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(path)


def _nyu_dir(tmp_path, train_lines=None):
    """A hand-made DenseDepth directory with one 2x3 sample per split of known depth values."""
    root = tmp_path / "nyu"
    _rgb(root / "nyu2_train/00001_colors.png")
    Image.fromarray(np.array([[0, 51, 255], [1, 102, 204]], np.uint8)).save(root / "nyu2_train/00001_depth.png")
    _rgb(root / "nyu2_test/00000_colors.png")
    Image.fromarray(np.array([[0, 1234, 65535], [1, 1000, 9999]], np.uint16)).save(root / "nyu2_test/00000_depth.png")
    lines = train_lines or ["data/nyu2_train/00001_colors.png,data/nyu2_train/00001_depth.png"]
    (root / "nyu2_train.csv").write_text("\n".join(lines) + "\n")
    (root / "nyu2_test.csv").write_text("data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png\n")
    return root


def test_nyu_units_of_both_splits(tmp_path):
    root = _nyu_dir(tmp_path)
    train = np.asarray(load_nyu(root, "train")[0]["depth"])
    assert train.dtype == np.float32 and train.shape == (2, 3)
    np.testing.assert_allclose(train, np.array([[0, 2.0, 10.0], [10 / 255, 4.0, 8.0]], np.float32), rtol=1e-6)
    test = np.asarray(load_nyu(root, "test")[0]["depth"])
    np.testing.assert_allclose(test, np.array([[0, 1.234, 65.535], [0.001, 1.0, 9.999]], np.float32), rtol=1e-6)


def test_nyu_three_channel_depth_uses_first_channel(tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray(np.dstack([np.full((2, 2), 51, np.uint8), np.zeros((2, 2), np.uint8),
                               np.full((2, 2), 255, np.uint8)])).save(path)
    np.testing.assert_allclose(read_nyu_depth(path), np.full((2, 2), 2.0, np.float32), rtol=1e-6)


def _paths(ds) -> list[str]:
    """The image files behind a source (its `image` column read undecoded)."""
    undecoded = ds.cast_column("image", datasets.Image(decode=False))
    return [undecoded[i]["image"]["path"] for i in range(len(ds))]


def test_nyu_columns_and_paths(tmp_path):
    root = _nyu_dir(tmp_path)
    ds = load_nyu(root)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 1 and ds.column_names == ["image", "depth"]
    example = ds[0]
    assert isinstance(example["image"], Image.Image) and example["image"].size == (3, 2)  # decoded, as datasets do
    assert _paths(ds) == [str(root / "nyu2_train/00001_colors.png")]
    assert example["depth_path"] == str(root / "nyu2_train/00001_depth.png")


def test_nyu_generated_layout_round_trip(tmp_path):
    root = write_nyu_csv_layout(tmp_path, num_train=2, num_test=1, size=TINY)
    train, test = load_nyu(root, "train"), load_nyu(root, "test")
    assert len(train) == 2 and len(test) == 1
    for ds in (train, test):  # both splits in metres: indoor range, no invalid pixels
        depth = np.asarray(ds[0]["depth"])
        assert depth.shape == TINY and 0.2 < depth.min() and depth.max() <= 13.0


def test_nyu_csv_path_resolution(tmp_path):
    root = _nyu_dir(tmp_path, train_lines=[
        "data/nyu2_train/00001_colors.png,data/nyu2_train/00001_depth.png",  # the real CSVs' prefix
        "nyu2_train/00001_colors.png, nyu2_train/00001_depth.png",  # relative to dataset_dir
        f"{tmp_path}/nyu/nyu2_train/00001_colors.png,{tmp_path}/nyu/nyu2_train/00001_depth.png",  # absolute
    ])
    ds = load_nyu(root)
    assert len(ds) == 3
    assert set(_paths(ds)) == {str(root / "nyu2_train/00001_colors.png")}


def test_nyu_csv_paths_under_a_data_folder(tmp_path):
    # Files in dataset_dir/data/nyu2_train/: the CSV's `data/...` paths are then literal.
    root = _nyu_dir(tmp_path)
    (root / "data").mkdir()
    (root / "nyu2_train").rename(root / "data" / "nyu2_train")
    assert _paths(load_nyu(root)) == [str(root / "data/nyu2_train/00001_colors.png")]


def test_nyu_missing_file_names_csv_and_line(tmp_path):
    root = _nyu_dir(tmp_path, train_lines=[
        "data/nyu2_train/00001_colors.png,data/nyu2_train/00001_depth.png",
        "data/nyu2_train/00002_colors.png,data/nyu2_train/00002_depth.png",
    ])
    with pytest.raises(FileNotFoundError, match=r"nyu2_train\.csv, line 2: data/nyu2_train/00002_colors\.png"):
        load_nyu(root)


def test_nyu_malformed_and_empty_csv(tmp_path):
    root = _nyu_dir(tmp_path, train_lines=["data/nyu2_train/00001_colors.png"])
    with pytest.raises(ValueError, match="line 1"):
        load_nyu(root)
    (root / "nyu2_train.csv").write_text("\n")
    with pytest.raises(ValueError, match="nyu2_train.csv lists no samples"):
        load_nyu(root)


def test_missing_or_foreign_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_nyu(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nyu2_test.csv"):
        load_nyu(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_nyu(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_training_source(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no images"):
        load_images(tmp_path)


def test_image_folder_recursive_and_filtered(tmp_path):
    write_image_folder(tmp_path, num_images=3, size=TINY, ext="jpg", nested=True)
    _rgb(tmp_path / "deep/a/b/x.PNG")
    _rgb(tmp_path / "y.webp")
    _rgb(tmp_path / ".cache/hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_images(tmp_path)
    paths = _paths(ds)
    assert len(paths) == 5 and paths == sorted(paths)
    assert not any("hidden" in p or p.endswith(".txt") for p in paths)


def test_webdataset_streams_and_drops_json(tmp_path):
    write_webdataset_shards(tmp_path, num_shards=2, per_shard=3, size=TINY)
    ds = load_webdataset(tmp_path)
    assert isinstance(ds, datasets.IterableDataset) and ds.num_shards == 2
    examples = list(ds)
    assert set(examples[0]) == {"__key__", "__url__", "image"}
    assert sorted(e["__key__"] for e in examples) == [f"sa_{n}" for n in range(1, 7)]
    assert isinstance(examples[0]["image"], Image.Image) and examples[0]["image"].format == "JPEG"
    assert [e["__key__"] for e in load_webdataset(str(tmp_path / "sa_*.tar"))] == [e["__key__"] for e in examples]


class _KeySampler:
    """Stand-in sampler recording which image it saw (the mean pixel value identifies a generated scene)."""

    def __call__(self, image, depth=None, *, epoch, index):
        return {"id": round(float(np.asarray(image.convert("RGB")).mean()), 3), "index": index}


def test_webdataset_split_across_two_ranks_without_overlap(tmp_path):
    write_webdataset_shards(tmp_path, num_shards=2, per_shard=3, size=TINY)
    source = load_webdataset(tmp_path, shuffle_buffer=4, seed=1)
    everything = {s["id"] for s in IterableViewDataset(source, _KeySampler(), rank=0, world_size=1)}
    per_rank = [[s for s in IterableViewDataset(source, _KeySampler(), rank=r, world_size=2)] for r in range(2)]
    ids = [{s["id"] for s in samples} for samples in per_rank]
    assert len(everything) == 6 and len(ids[0]) == len(ids[1]) == 3
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == everything
    indices = [s["index"] for samples in per_rank for s in samples]
    assert len(set(indices)) == 6  # view randomness differs between ranks


def test_webdataset_split_across_dataloader_workers(tmp_path):
    write_webdataset_shards(tmp_path, num_shards=2, per_shard=2, size=TINY)
    views = IterableViewDataset(load_webdataset(tmp_path), _KeySampler(), rank=0, world_size=1)
    loader = torch.utils.data.DataLoader(views, batch_size=None, num_workers=2)
    samples = list(loader)
    assert len(samples) == 4 and len({s["id"] for s in samples}) == 4
    assert len({int(s["index"]) for s in samples}) == 4


def test_training_source_detection(tmp_path):
    write_nyu_csv_layout(tmp_path / "nyu", num_train=1, num_test=0, size=TINY)
    write_webdataset_shards(tmp_path / "wds", num_shards=1, per_shard=1, size=TINY)
    write_image_folder(tmp_path / "img", num_images=1, size=TINY)
    assert "depth" in load_training_source(tmp_path / "nyu").column_names
    assert isinstance(load_training_source(tmp_path / "wds"), datasets.IterableDataset)
    assert isinstance(load_training_source(str(tmp_path / "wds" / "sa_*.tar")), datasets.IterableDataset)
    assert load_training_source(tmp_path / "img").column_names == ["image"]
    assert len(load_training_source(tmp_path / "nyu", format="images")) == 2  # colour and depth PNGs
    with pytest.raises(ValueError, match="format"):
        load_training_source(tmp_path / "img", format="lmdb")


def test_webdataset_never_reads_the_annotations(tmp_path):
    """SA-1B's json members are skipped unread: a shard whose json is not even JSON streams all its images."""
    import io
    import tarfile

    shard = write_webdataset_shards(tmp_path, num_shards=1, per_shard=2, size=TINY)[0]
    broken = tmp_path / "broken" / "sa_000000.tar"
    broken.parent.mkdir()
    with tarfile.open(shard) as source, tarfile.open(broken, "w") as target:
        for member in source:
            data = source.extractfile(member).read()
            if member.name.endswith(".json"):
                data = b"{not json"
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    examples = list(load_webdataset(broken.parent))
    assert [e["__key__"] for e in examples] == ["sa_1", "sa_2"]
    assert all(isinstance(e["image"], Image.Image) for e in examples)
    # datasets' own webdataset builder parses every json member, and stops on this shard.
    with pytest.raises(Exception, match="Expecting property name|JSON"):
        list(datasets.load_dataset("webdataset", data_files={"train": [str(broken)]}, split="train", streaming=True))


@pytest.mark.parametrize("shards, world_size, workers, expected", [
    (8, 2, 4, None),
    (16, 2, 4, None),
    (3, 2, 1, "3 streamed shards do not divide among 2 ranks: every rank reads all 3 shards"),
    (4, 2, 4, "4 streamed shards give 2 per rank for 4 DataLoader workers: 2 workers per rank read nothing"),
    (6, 2, 2, "6 streamed shards give 3 per rank, which do not divide among 2 DataLoader workers"),
])
def test_stream_split_warning_names_the_numbers(shards, world_size, workers, expected):
    message = stream_split_warning(shards, world_size, workers)
    if expected is None:
        assert message is None
    else:
        assert message.startswith(expected) and f"multiple of {world_size * workers} shards" in message


def test_uneven_shards_are_reported_when_streaming(tmp_path, caplog):
    write_webdataset_shards(tmp_path, num_shards=3, per_shard=1, size=TINY)
    source = load_webdataset(tmp_path, shuffle_buffer=0)
    with caplog.at_level("WARNING", logger="hf_distill.data.views"):
        samples = list(IterableViewDataset(source, _KeySampler(), rank=0, world_size=2))
    assert len(samples) == 2  # every rank reads all 3 shards and keeps every 2nd example
    assert "3 streamed shards do not divide among 2 ranks" in caplog.text
    caplog.clear()
    write_webdataset_shards(tmp_path / "even", num_shards=2, per_shard=1, size=TINY)
    with caplog.at_level("WARNING", logger="hf_distill.data.views"):
        list(IterableViewDataset(load_webdataset(tmp_path / "even"), _KeySampler(), rank=0, world_size=2))
    assert "streamed shards" not in caplog.text
