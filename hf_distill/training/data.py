"""Which data a run trains and evaluates on, from its arguments: loading it, and naming it on the model card.

Training data is ``--dataset_dir`` (NYU DenseDepth folder, image tree, webdataset shards), ``--dataset_name``
(anything ``datasets.load_dataset`` reads) or generated scenes (``--dataset_format generated``). Training-time evaluation follows ``scripts/evaluate.py``'s protocol
(docs/method.md, Evaluation protocol) on whole images, with one of three sources (``resolve_eval_data``):

- ``--eval_dataset_name`` (+ ``--eval_dataset_split``, ``--image_column``, ``--depth_column``), scored with
  ``--eval_benchmark``'s mask and range when given, else with ``--eval_min_depth``/``--eval_max_depth``;
- ``--eval_benchmark`` with ``--eval_dataset_dir`` (+ ``--eval_split_file``): the benchmark's own reader, exactly
  the samples ``scripts/evaluate.py --benchmark`` scores;
- an NYU DenseDepth folder's test split (``--eval_dataset_dir``, or ``--dataset_dir`` itself), scored with NYUv2's
  protocol (Eigen crop, 1e-3 < d < 10) unless ``--eval_benchmark`` says otherwise;
- your own RGB-D folder (``--eval_dataset_dir`` with images/ beside depth/), or ``--eval_dataset_name`` with
  ``--eval_gt_kind``: read under the ``--eval_gt_*`` declaration exactly as ``scripts/evaluate.py --benchmark folder``
  and ``--dataset_name`` read it (``hf_distill.evaluation.own_data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hf_distill.data.sources import (
    detect_source_format,
    load_dataset_source,
    load_generated_scenes,
    load_nyu,
    load_training_source,
)
from hf_distill.evaluation.benchmarks import BENCHMARKS, BenchmarkSpec, DatasetSamples, load_benchmark, range_mask
from hf_distill.evaluation.ground_truth import GroundTruthDeclaration, parse_invalid_value
from hf_distill.evaluation.loop import EvalSampleDataset
from hf_distill.evaluation.own_data import is_own_data_folder, load_dataset_samples, load_folder_samples
from hf_distill.training.arguments import DataArguments, DistillationArguments

_FORMAT_KINDS = {
    "nyu": "NYU Depth V2, DenseDepth CSV layout",
    "images": "image folder",
    "webdataset": "webdataset shards",
}


@dataclass(frozen=True)
class DataDescription:
    """Data as a model card names it: never a local path.

    name: a Hub dataset id, a benchmark's display name, or a local folder's own name. hub_id: the Hub id of Hub
    data. kind: what the data is. split: the split used. index_type: the dataset ``type`` of model-index entries.
    """

    name: str
    kind: str
    hub_id: str | None = None
    split: str | None = None
    index_type: str | None = None

    @property
    def text(self) -> str:
        """The card's text for it: a link for Hub data, the name and kind for local data."""
        split = f", split `{self.split}`" if self.split else ""
        if self.hub_id:
            return f"[{self.hub_id}](https://huggingface.co/datasets/{self.hub_id}) ({self.kind}{split})"
        return f"`{self.name}` ({self.kind}{split})"


def _local_name(path: str) -> str:
    """A local folder, file or glob by its own name (a glob keeps its folder's name: ``sa1b/sa_*.tar``)."""
    path_ = Path(path)
    if any(c in path for c in "*?["):
        return f"{path_.parent.name}/{path_.name}"
    return path_.name or path_.resolve().name


def _is_local(name: str) -> bool:
    return Path(name).exists() or Path(name).is_absolute() or name.startswith(".") or name.endswith(
        (".parquet", ".arrow")) or any(c in name for c in "*?[")


def describe_dataset(name: str, split: str | None, config_name: str | None = None) -> DataDescription:
    """A ``--dataset_name`` / ``--eval_dataset_name`` value as a card names it."""
    config = f" `{config_name}`" if config_name else ""
    if _is_local(name):
        return DataDescription(name=_local_name(name), kind=f"local dataset{config}", split=split,
                               index_type=_local_name(name))
    return DataDescription(name=name, kind=f"Hub dataset{config}", hub_id=name, split=split, index_type=name)


def describe_training_data(data_args: DataArguments) -> DataDescription | None:
    """The training data as a card names it (None when the arguments name none)."""
    if data_args.dataset_name is not None:
        return describe_dataset(data_args.dataset_name, data_args.dataset_split, data_args.dataset_config_name)
    if data_args.dataset_format == "generated":
        return DataDescription(name="generated scenes", kind=f"{data_args.num_generated_scenes} procedural RGB scenes "
                               "rendered by hf_distill.data.synthetic")
    if data_args.dataset_dir is None:
        return None
    fmt = data_args.dataset_format
    if fmt == "auto" and Path(data_args.dataset_dir).exists():
        fmt = detect_source_format(data_args.dataset_dir)
    return DataDescription(name=_local_name(data_args.dataset_dir), kind=_FORMAT_KINDS.get(fmt, "local data"),
                           split="train" if fmt == "nyu" else None)


def build_training_source(data_args: DataArguments, args: DistillationArguments, *, with_depth: bool = False):
    """The training source (map-style or streamed) named by ``--dataset_name`` or ``--dataset_dir``. ``with_depth``:
    exact depth for a teacher that reads it (oracle teachers), which only generated scenes have."""
    if with_depth and data_args.dataset_format != "generated":
        data = data_args.dataset_name or data_args.dataset_dir
        raise ValueError(f"an oracle teacher (--teacher_models oracle...) reads the exact depth of its views, which "
                         f"only generated scenes carry (--dataset_format generated); the training data {data} has "
                         "none.")
    if data_args.dataset_name is not None:
        return load_dataset_source(
            data_args.dataset_name, data_args.dataset_config_name, data_args.dataset_split,
            revision=data_args.dataset_revision, streaming=data_args.streaming, image_column=data_args.image_column,
            shuffle_buffer=data_args.shuffle_buffer_size, seed=args.seed,
        )
    if data_args.dataset_format == "generated":
        return load_generated_scenes(data_args.num_generated_scenes, size=tuple(data_args.generated_scene_size),
                                     with_depth=with_depth)
    if data_args.dataset_dir is None:
        raise ValueError("--dataset_dir or --dataset_name is required (an NYU CSV folder, an image folder, "
                         "webdataset shards, or a dataset that datasets.load_dataset reads), unless "
                         "--dataset_format generated.")
    return load_training_source(data_args.dataset_dir, format=data_args.dataset_format,
                                shuffle_buffer=data_args.shuffle_buffer_size, seed=args.seed)


@dataclass(frozen=True)
class EvalData:
    """The training-time evaluation source of a run (see the module docstring).

    kind: "dataset" (``location`` is ``--eval_dataset_name``), "benchmark" (``location`` is a benchmark archive),
    "nyu" (``location`` is an NYU DenseDepth folder) or "folder" (your own RGB-D folder, images/ beside depth/);
    "dataset" and "folder" data read under ``--eval_gt_*`` when ``declared``. spec: the benchmark whose protocol
    scores it, if any.
    """

    kind: str
    location: str
    spec: BenchmarkSpec | None
    declared: bool = False

    def describe(self, data_args: DataArguments) -> DataDescription:
        """The evaluation data as a card names it."""
        if self.kind == "dataset":
            return describe_dataset(self.location, data_args.eval_dataset_split, data_args.eval_dataset_config_name)
        if self.kind == "folder":
            name = _local_name(self.location)
            return DataDescription(name=name, kind="RGB-D folder", index_type=name)
        spec = self.spec
        if self.kind == "nyu":
            return DataDescription(name=f"{spec.display_name} ({_local_name(self.location)}, DenseDepth test split)",
                                   kind=_FORMAT_KINDS["nyu"], split="test", index_type=spec.hub_dataset)
        return DataDescription(name=spec.display_name, kind=f"{spec.name} benchmark", split=spec.split,
                               index_type=spec.hub_dataset)


def _is_nyu_folder(path: str | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / "nyu2_test.csv").is_file()


def resolve_eval_data(data_args: DataArguments, args: DistillationArguments) -> EvalData | None:
    """The run's evaluation source: the one named by the evaluation flags; with none, the NYU test split of an
    NYU ``--dataset_dir`` when ``--eval_strategy`` asks for evaluation; else None (no evaluation data)."""
    spec = BENCHMARKS[data_args.eval_benchmark] if data_args.eval_benchmark else None
    if data_args.eval_dataset_name is not None:
        return EvalData("dataset", data_args.eval_dataset_name, spec, declared=data_args.eval_gt_kind is not None)
    if data_args.eval_dataset_dir is not None and spec is None and is_own_data_folder(data_args.eval_dataset_dir):
        return EvalData("folder", data_args.eval_dataset_dir, None, declared=True)
    if data_args.eval_dataset_dir is not None and data_args.eval_gt_kind is not None:
        raise ValueError(f"--eval_dataset_dir {data_args.eval_dataset_dir}: --eval_gt_kind reads your own folder, "
                         "which needs images/ beside depth/ (paired by file stem)")
    if data_args.eval_dataset_dir is not None:
        if spec is not None and not _is_nyu_folder(data_args.eval_dataset_dir):
            return EvalData("benchmark", data_args.eval_dataset_dir, spec)
        if _is_nyu_folder(data_args.eval_dataset_dir):
            return EvalData("nyu", data_args.eval_dataset_dir, spec or BENCHMARKS["nyu"])
        raise ValueError(
            f"--eval_dataset_dir {data_args.eval_dataset_dir}: not an NYU DenseDepth folder (nyu2_test.csv) nor your "
            "own RGB-D folder (images/ beside depth/); a benchmark archive needs --eval_benchmark (nyu, kitti, eth3d, "
            "scannet, diode)."
        )
    if args.eval_strategy == "no":
        return None
    fmt, nyu_dir = data_args.dataset_format, data_args.dataset_dir
    if nyu_dir is not None and (fmt == "nyu" or (fmt == "auto" and _is_nyu_folder(nyu_dir))):
        return EvalData("nyu", nyu_dir, spec or BENCHMARKS["nyu"])
    raise ValueError("--eval_strategy needs data with ground-truth depth: set --eval_dataset_name (with "
                     "--depth_column), or --eval_dataset_dir (an NYU folder, or a benchmark with --eval_benchmark).")


def build_eval_dataset(data_args: DataArguments, args: DistillationArguments) -> EvalSampleDataset | None:
    """Whole-image evaluation samples of the run (None without evaluation data). One sample is read at once, so
    that unreadable data fails before any model loads."""
    source = resolve_eval_data(data_args, args)
    if source is None:
        return None
    spec, limit = source.spec, data_args.max_eval_samples
    if source.declared:
        samples = load_declared_eval_samples(source, data_args, args)
        if len(samples):
            samples[0]  # bad columns or declarations fail here, before the models load
        return EvalSampleDataset(samples, min_depth=samples.min_depth, max_depth=samples.max_depth)
    if source.kind == "benchmark":
        samples = load_benchmark(spec.name, source.location, data_args.eval_split_file, limit)
    else:
        if source.kind == "dataset":
            rows = load_dataset_source(
                source.location, data_args.eval_dataset_config_name, data_args.eval_dataset_split,
                revision=data_args.eval_dataset_revision, image_column=data_args.image_column, depth_column=data_args.depth_column, flag="--eval_dataset_name",
            )
        else:
            rows = load_nyu(source.location, split="test")
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        low, high = _or_default(args.eval_min_depth, 1e-3), _or_default(args.eval_max_depth, 10.0)
        mask = spec.mask if spec is not None else range_mask(low, high)
        samples = DatasetSamples(rows, mask, name=source.location)
    if len(samples):
        samples[0]  # bad files, units or columns fail here, before the models load
    if spec is not None:
        return EvalSampleDataset(samples, min_depth=spec.min_depth, max_depth=spec.max_depth)
    return EvalSampleDataset(samples, min_depth=low, max_depth=high)


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


def load_declared_eval_samples(source: EvalData, data_args: DataArguments, args: DistillationArguments):
    """Your own evaluation data (a folder, or a dataset with ``--eval_gt_kind``) read under the ``--eval_gt_*``
    declaration, exactly as ``scripts/evaluate.py --benchmark folder`` / ``--dataset_name`` reads it."""
    declaration = GroundTruthDeclaration(
        kind=data_args.eval_gt_kind or "depth", scale=data_args.eval_gt_scale,
        invalid_value=parse_invalid_value(data_args.eval_gt_invalid), focal_baseline=data_args.eval_focal_baseline,
        min_depth=args.eval_min_depth, max_depth=args.eval_max_depth,
    )
    if not declaration.is_metric and args.eval_alignment != "disparity":
        raise ValueError("--eval_gt_kind disparity without --eval_focal_baseline is relative ground truth: it is "
                         f"aligned in disparity space (--eval_alignment disparity), not {args.eval_alignment}")
    if source.kind == "folder":
        return load_folder_samples(source.location, declaration, split_file=data_args.eval_split_file,
                                   max_samples=data_args.max_eval_samples)
    return load_dataset_samples(
        source.location, declaration, config_name=data_args.eval_dataset_config_name,
        split=data_args.eval_dataset_split, revision=data_args.eval_dataset_revision,
        image_column=data_args.image_column, depth_column=data_args.depth_column,
        mask_column=data_args.eval_mask_column, max_samples=data_args.max_eval_samples, flag="--eval_dataset_name",
    )
