"""A page to try a student beside its teacher: upload an image, see RGB, teacher depth and student depth side by side
in one colour map, with each model's latency (Gradio, the ``app`` extra).

``DepthComparison`` runs both models through ``pipeline("depth-estimation")`` (what a user of the published student
runs); ``build_app`` lays the page out; ``write_space`` writes the same page as a Hugging Face Space folder.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import pipeline

from hf_distill.data.images import to_rgb
from hf_distill.data.synthetic import render_scene
from hf_distill.hub import display_name
from hf_distill.models import EXAMPLE_PHOTO, resolve_model_name
from hf_distill.visualize import colorize_depth

EXAMPLE_SCENE_SEEDS = (0, 1)  # held-out generated scenes (the demo evaluates on seeds 0..23)
EXAMPLE_SCENE_SIZE = (168, 224)
RAW_DEPTH_FILE = "depth.npz"


@dataclass
class DepthPrediction:
    """Raw relative depth of one image from both models.

    teacher, student: float32 (H, W) maps at the image's size (larger = nearer for relative models), exactly
    ``pipeline("depth-estimation")(image)["predicted_depth"]``.
    latency_ms: wall time of each model's pipeline call on this image (pre- and post-processing included).
    """

    teacher: np.ndarray
    student: np.ndarray
    latency_ms: dict[str, float]


class DepthComparison:
    """A teacher and a student, each behind ``pipeline("depth-estimation")``.

    Args:
        teacher, student: aliases (``demo-teacher``, ``depthanything-large``, ...), Hub ids or local folders.
        device: where the models run (default: CUDA when available, else CPU).
    """

    def __init__(self, teacher: str, student: str, device: str | None = None) -> None:
        self.names = {"teacher": teacher, "student": student}
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        self.pipelines = {role: pipeline("depth-estimation", model=resolve_model_name(name), device=self.device)
                          for role, name in self.names.items()}
        warm_up = Image.new("RGB", (64, 48))
        for depth_pipeline in self.pipelines.values():  # the first call pays one-off costs, not the model
            depth_pipeline(warm_up)

    def predict(self, image: Image.Image) -> DepthPrediction:
        """Both models' raw depth of ``image`` (any PIL mode; upright and RGB by ``hf_distill.data.images.to_rgb``)
        and their latencies."""
        image = to_rgb(image)
        maps, latency = {}, {}
        for role, depth_pipeline in self.pipelines.items():
            start = time.perf_counter()
            output = depth_pipeline(image)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            latency[role] = (time.perf_counter() - start) * 1e3
            maps[role] = output["predicted_depth"].float().cpu().numpy()
        return DepthPrediction(teacher=maps["teacher"], student=maps["student"], latency_ms=latency)

    def render(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, str, str]:
        """What the page shows for ``image``: teacher and student depth coloured with the same colour map (Turbo,
        nearer = warmer, each map over its own 2-98 percentile range since relative scales differ), a Markdown
        latency table, and the path of an ``.npz`` holding both raw maps (``teacher``, ``student``)."""
        prediction = self.predict(image)
        raw = Path(tempfile.mkdtemp(prefix="hf_distill_app_")) / RAW_DEPTH_FILE
        np.savez(raw, teacher=prediction.teacher, student=prediction.student)
        rows = [f"| {role} | `{display_name(self.names[role])}` | {prediction.latency_ms[role]:.1f} |"
                for role in self.names]
        table = "\n".join(["| model | name | latency (ms) |", "|---|---|---|", *rows])
        note = (f"\n\nOne image, batch 1, on {self.device.type}"
                + (f" ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else "")
                + ", pre- and post-processing included.")
        return colorize_depth(prediction.teacher), colorize_depth(prediction.student), table + note, str(raw)


def example_images(folder: str | Path) -> list[Path]:
    """The page's examples, written to ``folder``: a real photograph (CC0) and held-out generated scenes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [Path(shutil.copy(EXAMPLE_PHOTO, folder / EXAMPLE_PHOTO.name))]
    for seed in EXAMPLE_SCENE_SEEDS:
        path = folder / f"generated_scene_{seed}.png"
        if not path.is_file():
            Image.fromarray(render_scene(seed, *EXAMPLE_SCENE_SIZE).image).save(path)
        paths.append(path)
    return paths


def build_app(comparison: DepthComparison, examples: list[Path] | None = None, title: str | None = None):
    """The Gradio page: an image in; RGB, teacher and student depth side by side, the latency table and the raw
    maps out. Its API endpoint ``/predict`` takes an image and returns the same four outputs."""
    import gradio as gr

    teacher, student = (display_name(comparison.names[role]) for role in ("teacher", "student"))
    title = title or f"Depth: {student} (student) beside {teacher} (teacher)"
    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {title}\nUpload an image, or pick an example. Depth is relative: nearer is warmer.")
        with gr.Row():
            image = gr.Image(type="pil", label="RGB", elem_id="rgb")
            # PNG: the colours the page shows are exactly those computed (Gradio's default output format is lossy)
            teacher_depth = gr.Image(label=f"Teacher: {teacher}", elem_id="teacher-depth", interactive=False,
                                     format="png")
            student_depth = gr.Image(label=f"Student: {student}", elem_id="student-depth", interactive=False,
                                     format="png")
        run = gr.Button("Estimate depth", variant="primary", elem_id="run")
        latency = gr.Markdown(elem_id="latency")
        raw = gr.File(label=f"Raw depth maps ({RAW_DEPTH_FILE}: teacher, student)", elem_id="raw-depth")
        outputs = [teacher_depth, student_depth, latency, raw]
        run.click(comparison.render, inputs=image, outputs=outputs, api_name="predict")
        if examples:
            gr.Examples(examples=[[str(path)] for path in examples], inputs=image, outputs=outputs,
                        fn=comparison.render, run_on_click=True, cache_examples=False)
    return page


# ---- a Hugging Face Space folder -------------------------------------------------------------------------------

_SPACE_APP = '''"""Hugging Face Space: {student} beside its teacher {teacher} (written by hf_distill's scripts/app.py)."""

from hf_distill.app import DepthComparison, build_app, example_images

TEACHER = {teacher!r}
STUDENT = {student!r}

page = build_app(DepthComparison(TEACHER, STUDENT), examples=example_images("examples"))

if __name__ == "__main__":
    page.launch()
'''

_SPACE_README = """---
title: {title}
emoji: 🔭
colorFrom: blue
colorTo: red
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: {license}
models:{models}
---

# {title}

Upload an image to see the relative depth of the distilled student [`{student}`]({student_url}) beside its teacher
[`{teacher}`]({teacher_url}), in one colour map, with each model's latency on this Space's hardware. Made with
hf_distill (cross-context distillation, "Distill Any Depth").

The app is `app.py`; `hf_distill/` is the library it runs, copied into this folder. Run it locally with
`pip install -r requirements.txt && python app.py`.
"""


def _is_hub_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name).exists()


def _hub_url(name: str) -> str:
    return f"https://huggingface.co/{name}" if _is_hub_id(name) else name


def _card_license(model: str) -> str:
    """The licence in a model's card (a local folder's README.md or the Hub's), else "other"."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(Path(model) / "README.md" if Path(model).is_dir() else model)
    except Exception:  # no card, or the Hub is unreachable: the Space's author picks the licence
        return "other"
    return card.data.license or "other"


def write_space(
    folder: str | Path, teacher: str, student: str, *, title: str | None = None, license: str | None = None
) -> Path:
    """Write a Hugging Face Space folder that serves this page for a published student: ``app.py``, the library
    (``hf_distill/``, copied from the installed package), ``requirements.txt`` (the library's dependencies and
    gradio, at the installed versions' lower bounds) and ``README.md`` with the Space metadata. ``teacher`` and
    ``student`` should be Hub ids (a Space cannot read local folders). ``license`` defaults to the student card's.
    Returns the folder."""
    folder = Path(folder)
    package = Path(__file__).resolve().parent
    if folder.resolve() == package.parent.resolve():
        raise ValueError(f"{folder} is the package's own checkout: write the Space to a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(package, folder / "hf_distill", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "app.py").write_text(_SPACE_APP.format(teacher=teacher, student=student))
    gradio_version = importlib.metadata.version("gradio")
    requirements = [r for r in importlib.metadata.requires("hf_distill") or [] if "extra ==" not in r]
    requirements.append(f"gradio>={gradio_version}")
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    title = title or f"{student.split('/')[-1]} depth"
    hub_models = [name for name in (student, teacher) if _is_hub_id(name)]
    (folder / "README.md").write_text(_SPACE_README.format(
        title=title, gradio_version=gradio_version, license=license or _card_license(student),
        models="".join(f"\n- {name}" for name in hub_models) or " []",
        student=student, teacher=teacher, student_url=_hub_url(student), teacher_url=_hub_url(teacher),
    ))
    return folder
