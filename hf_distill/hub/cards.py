"""Model cards of distilled students: rendered from ``hf_distill/templates/model_card.md``, updated with evaluation
results, the ONNX snippet and the size-and-speed section.

The YAML header carries pipeline_tag, library_name, base_model, datasets, teachers, licence and the model-index (one
``EvalResult`` per benchmark and metric); the body carries teachers, recipe, hyper-parameters, an evaluation table,
usage and the method's citation. Nothing in a card names a local path: a local folder appears by its folder name, a
Hub id as is.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_distill.hub.licences import resolve_license
from hf_distill.hub.model_index import TASK, eval_results_to_hub, evaluation_table, merge_eval_results
from hf_distill.hub.names import ONNX_FILE, ONNX_FOLDER, README, display_name, hub_id
from hf_distill.repositories import dataset_terms

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "templates" / "model_card.md"
_EVAL_START = "<!-- hf_distill:evaluation:start -->"
_EVAL_END = "<!-- hf_distill:evaluation:end -->"
_ONNX_START = "<!-- hf_distill:onnx:start -->"
_ONNX_END = "<!-- hf_distill:onnx:end -->"
_SIZE_START = "<!-- hf_distill:size-speed:start -->"
_SIZE_END = "<!-- hf_distill:size-speed:end -->"
SIZE_SPEED_PLACEHOLDER = "Not measured yet."


def _link(name: str) -> str:
    repo = hub_id(name)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else f"`{display_name(name)}`"


def _hyperparameters_table(hyperparameters: dict | None) -> str:
    if not hyperparameters:
        return ""
    lines = ["| Hyper-parameter | Value |", "| --- | --- |"]
    lines += [f"| `{name}` | `{value}` |" for name, value in hyperparameters.items()]
    return "\n".join(lines)


def build_model_card(
    *,
    model_name: str,
    base_model: str | None,
    teachers: list[str],
    datasets: list[str] | None = None,
    data_text: list[str] | None = None,
    hyperparameters: dict | None = None,
    eval_results: dict[str, dict[str, float]] | None = None,
    results: list[EvalResult] | None = None,
    license: str | None = None,
    onnx: bool = False,
    size_speed: str | None = None,
) -> ModelCard:
    """Render the card of a distilled student.

    Args:
        model_name: the Hub repo id the card's usage snippets load (or a local folder name).
        base_model: alias / Hub id / local folder the student's weights were initialised from (None when trained
            from scratch); a Hub id becomes ``base_model`` in the metadata.
        teachers: aliases / Hub ids / local folders of the teachers.
        datasets: Hub ids of the training data (``datasets`` in the metadata).
        data_text: the training data as the text describes it (default: links to ``datasets``); never local paths.
        hyperparameters: shown as a table (e.g. the distillation arguments).
        eval_results: ``{benchmark: {metric: value}}`` as written by ``scripts/evaluate.py``.
        results: further model-index entries (kept results of an earlier card, training-time evaluation).
        license: the user's licence; a CC-BY-NC-4.0 teacher or base model overrides it (with a warning).
        onnx: whether the student has an ONNX export (``onnx/model.onnx``): the card then shows its onnxruntime
            snippet.
        size_speed: the "Size and speed" section's Markdown (``ModelComparison.markdown``; kept from an earlier card
            with ``existing_size_speed``); default: how to measure it.
    """
    resolved_license, license_reason = resolve_license(teachers, base_model, license)
    entries = merge_eval_results(results or [], eval_results_to_hub(eval_results or {}))
    base_hub_id = hub_id(base_model) if base_model else None
    card_data = ModelCardData(
        model_name=model_name,
        license=resolved_license,
        library_name="transformers",
        pipeline_tag=TASK,
        base_model=base_hub_id,
        datasets=list(datasets or []) or None,
        tags=["depth-estimation", "depth-anything", "knowledge-distillation", "distill-any-depth"],
        eval_results=entries or None,
        teachers=[hub_id(t) or display_name(t) for t in teachers] or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        base_model_text=_link(base_model) if base_model else "",
        teachers_text=", ".join(_link(t) for t in teachers) or "not recorded",
        data_text=data_text if data_text is not None else [f"[{d}](https://huggingface.co/datasets/{d})"
                                                           for d in datasets or []],
        license_text=(f"{resolved_license}: {license_reason}" if resolved_license else license_reason)
        + "".join(f" Training data: {terms}" for terms in dataset_terms([*(data_text or []), *(datasets or [])])),
        hyperparameters_table=_hyperparameters_table(hyperparameters),
        evaluation_table=evaluation_table(entries),
        onnx_usage=onnx_usage(model_name) if onnx else "",
        size_speed=size_speed or SIZE_SPEED_PLACEHOLDER,
    )


def onnx_usage(model_name: str) -> str:
    """The card's onnxruntime snippet for ``model_name`` (a Hub id, or a folder next to the snippet)."""
    return f'''With onnxruntime (the ONNX export in `{ONNX_FOLDER}/`, dynamic batch and size, sides multiples of 14):

```python
from pathlib import Path

import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download
from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_utils import load_image

model_id = "{model_name}"
onnx_file = Path(model_id, "{ONNX_FOLDER}", "model.onnx")  # a local copy of the repository, else the Hub's
if not onnx_file.is_file():
    onnx_file = hf_hub_download(model_id, "{ONNX_FOLDER}/model.onnx")
session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
processor = AutoImageProcessor.from_pretrained(model_id)
image = load_image("image.jpg")  # upright (EXIF orientation applied), RGB
pixel_values = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
predicted = session.run(["predicted_depth"], {{"pixel_values": pixel_values}})[0]  # (1, h, w), larger = closer
disparity = Image.fromarray(predicted[0]).resize(image.size, Image.BICUBIC)  # float map at the image's size
```'''


def has_onnx(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ONNX export (``onnx/model.onnx``)."""
    return (Path(folder) / ONNX_FOLDER / ONNX_FILE).is_file()


def add_onnx_usage(card_path: str | Path) -> None:
    """Put the onnxruntime snippet into an existing card (between its ONNX markers, else at the end of "How to
    use" or of the card), named after the card's ``model_name`` (else its folder)."""
    path = Path(card_path)
    card = ModelCard.load(path)
    block = f"{_ONNX_START}\n{onnx_usage(card.data.model_name or path.parent.name)}\n{_ONNX_END}"
    text = card.text
    if _ONNX_START in text and _ONNX_END in text:
        head, rest = text.split(_ONNX_START, 1)
        text = head + block + rest.split(_ONNX_END, 1)[1]
    elif "\n## Citation" in text:
        head, rest = text.split("\n## Citation", 1)
        text = head.rstrip("\n") + f"\n\n{block}\n\n## Citation" + rest
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    card.text = text
    card.save(path)


def _replace_block(text: str, start: str, end: str, content: str, section: str) -> str:
    """``text`` with the lines between the ``start`` and ``end`` markers replaced by ``content`` (appended as a new
    ``## section`` when the markers are missing)."""
    block = f"{start}\n{content}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + f"\n\n## {section}\n\n{block}\n"


def update_model_card(
    model_dir: str | Path, eval_results: dict[str, dict[str, float]], *, size_speed: str | None = None
) -> ModelCard:
    """Write evaluation results (and, when given, the "Size and speed" section) into ``model_dir/README.md`` and
    return the card.

    An existing card keeps its text and metadata: model-index entries for the same dataset and metric
    get the new value, others (training-time evaluation included) are kept, and the evaluation table between
    the hf_distill markers is regenerated (appended as a new section when the card has no markers); so is the
    size-and-speed section. Without a card, a new one is rendered (teachers unknown).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} not found")
    path = model_dir / README
    if not path.is_file():
        card = build_model_card(model_name=model_dir.name, base_model=None, teachers=[], eval_results=eval_results,
                                size_speed=size_speed)
        card.save(path)
        return card
    card = ModelCard.load(path)
    entries = merge_eval_results(card.data.eval_results or [], eval_results_to_hub(eval_results))
    card.data.eval_results = entries
    card.data.model_name = card.data.model_name or model_dir.name
    text = _replace_block(card.text, _EVAL_START, _EVAL_END, evaluation_table(entries), "Evaluation")
    if size_speed is not None:
        text = _replace_block(text, _SIZE_START, _SIZE_END, size_speed, "Size and speed")
    card.text = text
    card.save(path)
    return card


def existing_results(model_dir: str | Path) -> list[EvalResult]:
    """The model-index entries of ``model_dir/README.md`` (none without a card)."""
    path = Path(model_dir) / README
    return (ModelCard.load(path).data.eval_results or []) if path.is_file() else []


def existing_size_speed(model_dir: str | Path) -> str | None:
    """The measured "Size and speed" section of ``model_dir/README.md`` (None without a card or a measurement)."""
    path = Path(model_dir) / README
    if not path.is_file():
        return None
    text = path.read_text()
    if _SIZE_START not in text or _SIZE_END not in text:
        return None
    content = text.split(_SIZE_START, 1)[1].split(_SIZE_END, 1)[0].strip("\n")
    return None if content == SIZE_SPEED_PLACEHOLDER else content
