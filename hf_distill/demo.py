"""The embedded demo: distil the shipped tiny teacher into a smaller random student on generated scenes.

``run_demo()`` (what ``python scripts/distill.py`` runs with no arguments) evaluates the teacher and the untrained
student on held-out generated scenes with exact depth, runs the real distillation pipeline of the shipped recipe
``hf_distill/configs/demo.yaml`` (training scenes generated on the fly), evaluates the student again, measures the
size and speed of the teacher and the saved student (``evaluation.profile``) and writes ``demo_report.json`` beside
the student folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

from hf_distill.data.synthetic import render_scene
from hf_distill.evaluation.benchmarks import EvalSample
from hf_distill.evaluation.compare import ModelComparison
from hf_distill.evaluation.predict import evaluate_model
from hf_distill.evaluation.profile import ModelProfile, ProfileSettings, profile_model
from hf_distill.hub import eval_results_to_hub, evaluation_table, update_model_card
from hf_distill.models import PACKAGE_MODELS, load_depth_model, tiny_depth_config
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.engines import is_zero3, whole_models
from hf_distill.training.run import build_trainer, train_student

logger = logging.getLogger(__name__)

DEMO_TEACHER = PACKAGE_MODELS["demo-teacher"]
DEMO_STUDENT = PACKAGE_MODELS["demo-student"]  # config and processor only: the student starts from random weights
DEMO_PROCESSING_SIZE = 112
EVAL_SCENE_SIZE = (168, 224)
EVAL_DEPTH_RANGE = (1e-3, 20.0)
REPORT_METRICS = ("abs_rel", "delta1", "rmse")
# Few repeats and a small batch: the demo's wall time budget (the table adds about a CPU-second). One thread: tiny
# models gain little from more, and one thread's figures are the least disturbed by other work on the machine.
PROFILE_SETTINGS = ProfileSettings(height=DEMO_PROCESSING_SIZE, width=DEMO_PROCESSING_SIZE, batch_size=4, warmup=2,
                                   repeats=10, throughput_repeats=3, threads=1)


def demo_teacher_config() -> DepthAnythingConfig:
    """The demo teacher: Depth Anything V2-Small structure at about 1.2M parameters (5 MB)."""
    return tiny_depth_config(
        "small", hidden_size=96, num_attention_heads=4, num_hidden_layers=4,
        neck_hidden_sizes=[24, 48, 96, 96], fusion_hidden_size=48, head_hidden_size=16,
    )


def demo_student_config() -> DepthAnythingConfig:
    """The demo student: same structure, half the width (0.36M parameters, under a third of the teacher)."""
    return tiny_depth_config(
        "small", hidden_size=48, num_attention_heads=3, num_hidden_layers=4,
        neck_hidden_sizes=[12, 24, 48, 48], fusion_hidden_size=24, head_hidden_size=8,
    )


DEMO_TEACHER_CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "demo_teacher_card.md"
HELDOUT_BENCHMARK = "generated-scenes-heldout"


def demo_teacher_card(metrics: dict[str, float], settings: dict) -> ModelCard:
    """The demo teacher's README.md: what it is (trained with ground truth on generated scenes), how it was
    trained (``settings``: scripts/make_demo_teacher.py's arguments), its held-out ``metrics`` and how to load it
    from the installed package."""
    config = demo_teacher_config()
    entries = eval_results_to_hub({HELDOUT_BENCHMARK: metrics})
    card_data = ModelCardData(
        model_name="hf_distill demo teacher", license="apache-2.0", library_name="transformers",
        pipeline_tag="depth-estimation", tags=["depth-estimation", "depth-anything", "hf_distill-demo"],
        eval_results=entries,
    )
    num_parameters = sum(p.numel() for p in DepthAnythingForDepthEstimation(config).parameters())
    return ModelCard.from_template(
        card_data, template_path=str(DEMO_TEACHER_CARD_TEMPLATE), model_name=card_data.model_name,
        num_parameters=f"{num_parameters / 1e6:.1f}M", hidden_size=config.backbone_config.hidden_size,
        num_layers=config.backbone_config.num_hidden_layers, settings=settings,
        depth_range=f"{EVAL_DEPTH_RANGE[0]:g} to {EVAL_DEPTH_RANGE[1]:g}", evaluation_table=evaluation_table(entries),
    )


def demo_eval_samples(num_scenes: int = 24) -> list[EvalSample]:
    """Held-out generated scenes (seeds 0..num_scenes-1; training scenes use other seeds) with exact depth."""
    samples = []
    for seed in range(num_scenes):
        scene = render_scene(seed, *EVAL_SCENE_SIZE)
        samples.append(EvalSample(name=f"scene_{seed:04d}", image=Image.fromarray(scene.image), depth=scene.depth,
                                  valid=np.isfinite(scene.depth) & (scene.depth > 0)))
    return samples


def evaluate_on_samples(model: DepthAnythingForDepthEstimation, processor, samples: list[EvalSample]) -> dict:
    """Disparity-aligned depth metrics of a relative model, averaged over the samples."""
    was_training = model.training
    model.eval()
    summary, _ = evaluate_model(model, processor, samples, alignment="disparity", min_depth=EVAL_DEPTH_RANGE[0],
                                max_depth=EVAL_DEPTH_RANGE[1], batch_size=8)
    model.train(was_training)
    return summary


def run_demo(argv: list[str] | tuple[str, ...] = (), *, num_eval_scenes: int = 24) -> dict | None:
    """Run the demo recipe (``--config demo`` plus ``argv`` overrides) from scratch and return the report (also
    written to ``output_dir/demo_report.json``). Every rank trains; the main process alone evaluates before training,
    writes the report and returns it (other ranks return None). After training a student sharded across ranks
    (DeepSpeed ZeRO-3) is evaluated by every rank on the same scenes, as each forward gathers its weights from all."""
    model_args, data_args, training_args = parse_distill_args(["--config", "demo", *argv])
    output_dir = Path(training_args.output_dir)
    with training_args.main_process_first(desc="clearing the demo output folder"):
        if training_args.process_index == 0 and output_dir.exists():
            shutil.rmtree(output_dir)  # the demo always starts from scratch (no resume of an old demo)
    trainer = build_trainer(model_args, data_args, training_args)
    student = trainer.accelerator.unwrap_model(trainer.model).student
    is_main = trainer.is_world_process_zero()
    if is_main:
        samples = demo_eval_samples(num_eval_scenes)
        with whole_models():  # built on this rank only
            teacher = load_depth_model(model_args.teacher_models[0])
        report = {"teacher": evaluate_on_samples(teacher, trainer.processing_class, samples),
                  "student_before": evaluate_on_samples(student, trainer.processing_class, samples)}
    train_student(trainer)
    if is_zero3(trainer.accelerator):
        after = evaluate_on_samples(student, trainer.processing_class, demo_eval_samples(num_eval_scenes))
    elif is_main:
        after = evaluate_on_samples(student, trainer.processing_class, samples)
    if not is_main:
        return None
    report["student_after"] = after
    start = time.perf_counter()
    profiles = measure_size_and_speed(model_args.teacher_models[0], output_dir)
    profile_seconds = time.perf_counter() - start
    report = {name: {**{k: float(v) for k, v in metrics.items()},
                     "profile": profiles["teacher" if name == "teacher" else "student"].to_dict()}
              for name, metrics in report.items()}
    (output_dir / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    card_rows = {model_args.teacher_models[0]: report["teacher"], output_dir.name: report["student_after"]}
    update_model_card(output_dir, {HELDOUT_BENCHMARK: report["student_after"]},
                      size_speed=report_comparison(card_rows).markdown(highlight=output_dir.name,
                                                                       metrics=REPORT_METRICS))
    print(format_report(report))
    print(f"(size and speed measured in {profile_seconds:.1f} s)")
    print(f"\nDemo outputs in {output_dir}/: demo_report.json, the student folder (config.json, "
          "model.safetensors, preprocessor_config.json, README.md), student_final.safetensors, "
          "visualizations/, train.log")
    return report


def measure_size_and_speed(teacher: str, student_dir: str | Path) -> dict[str, ModelProfile]:
    """``{"teacher": ..., "student": ...}``: the size and speed of the teacher and of the student as saved in
    ``student_dir`` (what a user loads), measured with ``PROFILE_SETTINGS`` (CPU, one thread)."""
    with whole_models():  # built on the main process only: never partitioned (a collective) under ZeRO-3
        models = {"teacher": load_depth_model(teacher), "student": load_depth_model(str(student_dir))}
    return {
        "teacher": profile_model(models["teacher"], PROFILE_SETTINGS, name=teacher),
        "student": profile_model(models["student"], PROFILE_SETTINGS, name=Path(student_dir).name),
    }


def report_comparison(report: dict[str, dict]) -> ModelComparison:
    """The demo report's rows (metrics and their ``profile``) as a comparison on the held-out scenes; the first row
    is the reference of the ratios."""
    return ModelComparison(
        profiles={name: ModelProfile.from_dict(entry["profile"]) for name, entry in report.items()},
        metrics={name: {HELDOUT_BENCHMARK: {k: v for k, v in entry.items() if k != "profile"}}
                 for name, entry in report.items()},
    )


def format_report(report: dict[str, dict]) -> str:
    """The demo's results as Markdown: size and speed next to the held-out metrics, ratios against the teacher."""
    return report_comparison(report).markdown(metrics=REPORT_METRICS)
