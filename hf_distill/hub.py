"""Model cards for distilled students and pushing them to the Hub.

Cards are rendered from ``hf_distill/templates/model_card.md`` with ``huggingface_hub.ModelCard``:
the YAML header carries pipeline_tag, library_name, base_model, datasets, teachers, licence and the
model-index (one ``EvalResult`` per benchmark and metric); the body carries teachers, recipe,
hyper-parameters, an evaluation table, usage and the method's citation. Nothing in a card names a local
path: a local folder appears by its folder name, a Hub id as is.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

from hf_distill import __version__
from hf_distill.evaluation.benchmarks import BENCHMARKS
from hf_distill.evaluation.metrics import METRIC_NAMES
from hf_distill.models import resolve_model_name
from hf_distill.repositories import NON_COMMERCIAL, REPOSITORIES, Repository, dataset_terms, repository

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
README = "README.md"
TASK = "depth-estimation"
TASK_NAME = "Relative depth estimation"
CARD_DECIMALS = 6  # metric values in model-index are rounded to this many decimals
# The dataset_config of model-index entries of training-time evaluation ("training-time-best", ...): a group of
# model-index results is one (task, dataset, config, split), so best, last and scripts/evaluate.py's entries of the
# same dataset need distinct configs. A new card replaces all training-time entries.
TRAINING_CONFIG = "training-time"

# Licences declared by the Hub repos of known teachers / base models (hf_distill.repositories holds them, each
# with its reason). A source whose licence is unknown never overrides the user's choice.
KNOWN_LICENSES: dict[str, str] = {
    repo.hub_id: repo.license for repo in REPOSITORIES.values() if repo.license and repo.kind == "depth model"
}

# The files of a student folder that reach the Hub (weights possibly sharded); README.md is added as the card.
STUDENT_FILES = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
)
# The ONNX export (hf_distill.export) lives in this subfolder, as transformers.js and optimum expect; every ONNX
# file in it (model.onnx, model_quantized.onnx, external data) is published with the student.
ONNX_FOLDER = "onnx"
ONNX_FILE = "model.onnx"
ONNX_FILES = ("*.onnx", "*.onnx.data", "*.onnx_data")

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_EVAL_START = "<!-- hf_distill:evaluation:start -->"
_EVAL_END = "<!-- hf_distill:evaluation:end -->"
_ONNX_START = "<!-- hf_distill:onnx:start -->"
_ONNX_END = "<!-- hf_distill:onnx:end -->"
_SIZE_START = "<!-- hf_distill:size-speed:start -->"
_SIZE_END = "<!-- hf_distill:size-speed:end -->"
SIZE_SPEED_PLACEHOLDER = "Not measured yet."
_METRIC_HEADERS = {
    "abs_rel": "AbsRel ↓",
    "sq_rel": "SqRel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "log10": "log10 ↓",
    "delta1": "δ1 ↑",
    "delta2": "δ2 ↑",
    "delta3": "δ3 ↑",
}


# ---- names -----------------------------------------------------------------------------------------------


def display_name(name_or_path: str | Path) -> str:
    """How a model is named on a card: an alias or Hub id as given, a local folder or file by its own name (never
    the absolute path of the training machine)."""
    text = str(name_or_path)
    path = Path(text)
    return path.name if path.exists() or path.is_absolute() or text.startswith(".") else text


def hub_id(name: str) -> str | None:
    """The Hub id behind an alias or id; None for local paths."""
    resolved = resolve_model_name(name)
    return resolved if not Path(name).exists() and resolved.count("/") == 1 and _HUB_ID.match(resolved) else None


def _link(name: str) -> str:
    repo = hub_id(name)
    return f"[{repo}](https://huggingface.co/{repo})" if repo else f"`{display_name(name)}`"


# ---- licence ---------------------------------------------------------------------------------------------


def _source_repository(name: str) -> Repository | None:
    """The table entry of a teacher / base model: an alias or Hub id, or a local GenPercept folder (its
    teacher_config.json family: the folder holds GenPercept's weights)."""
    path = Path(resolve_model_name(name))
    if path.is_dir():
        config = path / "teacher_config.json"
        if not config.is_file():
            return None
        try:
            return repository(json.loads(config.read_text()).get("family", ""))
        except json.JSONDecodeError:
            return None
    return repository(name) or repository(str(path))


def known_license(name: str) -> str | None:
    """The licence a model is published under: the table's (``hf_distill.repositories``) for aliases and Hub ids,
    the ``license`` of a local folder's own README.md card (else its GenPercept family's); None when unknown."""
    path = Path(resolve_model_name(name))
    if path.is_dir() and (path / README).is_file():  # a local folder, or a model shipped in the package
        return ModelCard.load(path / README).data.license
    repo = _source_repository(name)
    return repo.license if repo is not None else None


def _non_commercial(name: str, declared: str | None) -> bool:
    repo = _source_repository(name)
    return declared == NON_COMMERCIAL or (repo is not None and repo.non_commercial and declared == repo.license)


def resolve_license(
    teachers: Sequence[str], base_model: str | None, license: str | None
) -> tuple[str | None, str]:
    """The student's licence given the teachers and the initial weights it derives from, and why.

    A non-commercial source makes the student non-commercial whatever ``license`` asks (with a warning): a
    CC-BY-NC-4.0 source makes it cc-by-nc-4.0; GenPercept (non-commercial academic terms, not a CC licence) makes it
    ``other``. Each restricting source's reason is on the card. Otherwise ``license`` is kept; without one, the
    sources' licence when they all share a known one, else None (with a warning asking for an explicit licence).

    Returns:
        ``(licence or None, a sentence for the card saying which source constrains it and why)``.
    """
    roles = {name: "the teacher" for name in teachers}
    if base_model:
        roles[base_model] = "the teacher and initial weights" if base_model in roles else "the initial weights"
    declared = {name: known_license(name) for name in roles}

    def named(names: list[str]) -> str:
        return " and ".join(f"{roles[n]} {display_name(n)} ({declared[n] or 'licence unknown'})" for n in names)

    restricted = [name for name, value in declared.items() if _non_commercial(name, value)]
    if restricted:
        # A licence other than CC-BY-NC (GenPercept's academic terms) is stricter: the student says `other`.
        resolved = NON_COMMERCIAL if all(declared[n] == NON_COMMERCIAL for n in restricted) else "other"
        message = (
            f"{', '.join(display_name(n) for n in restricted)} is licensed "
            f"{' / '.join(sorted({declared[n] for n in restricted}))}: the distilled student is for non-commercial "
            f"use only and its card declares {resolved}"
        )
        if license not in (None, resolved):
            message += f" (instead of the requested {license})"
        warnings.warn(message, UserWarning, stacklevel=3)
        reasons = list(dict.fromkeys(repo.license_reason for n in restricted  # one sentence per distinct reason
                                     if (repo := _source_repository(n)) is not None and declared[n] == repo.license))
        return resolved, (
            f"non-commercial, set by {named(restricted)}: a model distilled from another's predictions or initialised "
            "from its weights is a derived work and keeps its non-commercial terms."
            + (f" ({'; '.join(reasons)}.)" if reasons else "")
        )
    if license is not None:
        return license, f"declared for this model (sources: {named(list(roles))})." if roles else \
            "declared for this model."
    values = set(declared.values())
    if roles and len(values) == 1 and None not in values:
        return values.pop(), f"the licence of {named(list(roles))}."
    unknown = [name for name, value in declared.items() if value is None]
    names = ", ".join(display_name(n) for n in unknown) or "the student's sources"
    warnings.warn(f"the licence of {names} is unknown: pass --license (license=) to declare one", UserWarning,
                  stacklevel=3)
    return None, f"not declared: the licence of {names} is unknown (declare one with `--license`)."


# ---- model-index -----------------------------------------------------------------------------------------


def _entries(
    metrics: dict[str, float], *, dataset_type: str, dataset_name: str, dataset_split: str | None,
    dataset_config: str | None = None,
) -> list[EvalResult]:
    entries = []
    for metric in METRIC_NAMES:
        value = metrics.get(metric)
        if value is None or math.isnan(value):
            continue
        entries.append(
            EvalResult(
                task_type=TASK,
                task_name=TASK_NAME,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                dataset_split=dataset_split,
                metric_type=metric,
                metric_name=_METRIC_HEADERS[metric],
                metric_value=round(float(value), CARD_DECIMALS),
            )
        )
    return entries


def eval_results_to_hub(eval_results: dict[str, dict[str, float]]) -> list[EvalResult]:
    """``{benchmark: {metric: value}}`` -> model-index entries (non-metric keys such as num_samples are dropped)."""
    entries = []
    for benchmark, metrics in eval_results.items():
        spec = BENCHMARKS.get(benchmark)
        entries += _entries(
            metrics,
            dataset_type=spec.hub_dataset if spec else benchmark,
            dataset_name=spec.display_name if spec else benchmark,
            dataset_split=spec.split if spec else None,
        )
    return entries


def training_eval_results(
    evaluations: Sequence[dict[str, float]],
    *,
    metric_for_best_model: str,
    greater_is_better: bool,
    dataset_type: str,
    dataset_name: str,
    dataset_split: str | None,
) -> list[EvalResult]:
    """model-index entries of training-time evaluation: the best and the last evaluation of ``evaluations`` (the
    Trainer's ``eval_*`` logs with their ``step``), one result group each (dataset_config ``training-time-best``,
    ``training-time-last``; one group ``training-time-best-and-last`` when they are the same step)."""
    key = metric_for_best_model if metric_for_best_model.startswith("eval_") else f"eval_{metric_for_best_model}"
    scored = [log for log in evaluations if log.get(key) is not None and math.isfinite(log[key])]
    if not scored:
        return []
    best = (max if greater_is_better else min)(scored, key=lambda log: log[key])
    last = scored[-1]
    picks = [("best and last", best)] if best["step"] == last["step"] else [("best", best), ("last", last)]
    entries = []
    for label, log in picks:
        metrics = {name: log[f"eval_{name}"] for name in METRIC_NAMES if f"eval_{name}" in log}
        entries += _entries(
            metrics,
            dataset_type=dataset_type,
            dataset_name=f"{dataset_name} (during training, {label}: step {log['step']})",
            dataset_split=dataset_split,
            dataset_config=f"{TRAINING_CONFIG}-{label.replace(' ', '-')}",
        )
    return entries


def is_training_result(entry: EvalResult) -> bool:
    """Whether a model-index entry reports training-time evaluation (rather than ``scripts/evaluate.py``)."""
    return (entry.dataset_config or "").startswith(TRAINING_CONFIG)


def merge_eval_results(existing: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
    """Existing entries of the same model-index group (task, dataset, config, split) and metric get the new value;
    others are appended. New training-time entries replace every existing training-time entry."""

    def key(entry: EvalResult) -> tuple:
        return entry.unique_identifier + (entry.metric_type,)

    if any(is_training_result(entry) for entry in new):
        existing = [entry for entry in existing if not is_training_result(entry)]
    merged = {key(entry): entry for entry in existing}
    for entry in new:
        merged[key(entry)] = entry
    return list(merged.values())


def evaluation_table(entries: list[EvalResult]) -> str:
    """Markdown table: one row per dataset, one column per metric present."""
    if not entries:
        return "No evaluation results yet (run `scripts/evaluate.py --update_card`)."
    datasets: dict[str, dict[str, float]] = {}
    for entry in entries:
        datasets.setdefault(entry.dataset_name, {})[entry.metric_type] = entry.metric_value
    metrics = [m for m in METRIC_NAMES if any(m in values for values in datasets.values())]
    metrics += sorted({m for values in datasets.values() for m in values} - set(metrics))
    lines = [
        "| Dataset | " + " | ".join(_METRIC_HEADERS.get(m, m) for m in metrics) + " |",
        "| --- |" + " --- |" * len(metrics),
    ]
    for dataset, values in datasets.items():
        cells = [f"{values[m]:.4f}" if m in values else "" for m in metrics]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hyperparameters_table(hyperparameters: dict | None) -> str:
    if not hyperparameters:
        return ""
    lines = ["| Hyper-parameter | Value |", "| --- | --- |"]
    lines += [f"| `{name}` | `{value}` |" for name, value in hyperparameters.items()]
    return "\n".join(lines)


# ---- cards -----------------------------------------------------------------------------------------------


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


# ---- push ------------------------------------------------------------------------------------------------


def student_files(folder: str | Path) -> list[Path]:
    """The files of a student folder that are published (``STUDENT_FILES``, and ``ONNX_FILES`` in ``onnx/``),
    sorted; raises FileNotFoundError when the folder lacks its config or weights."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, g) for g in STUDENT_FILES))
    onnx_folder = folder / ONNX_FOLDER
    if onnx_folder.is_dir():
        files += sorted(p for p in onnx_folder.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, g)
                                                                                for g in ONNX_FILES))
    names = {p.name for p in files}
    if "config.json" not in names:
        raise FileNotFoundError(f"{folder / 'config.json'} not found: save the student first")
    if not any(fnmatch.fnmatch(n, "model*.safetensors") for n in names):
        raise FileNotFoundError(f"no model*.safetensors in {folder}: save the student first")
    return files


def upload_student(
    repo_id: str,
    folder: str | Path,
    card: str | Path,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_path_in_repo: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled depth student",
):
    """One commit to an existing model repo: the student files of ``folder``, the card as ``README.md`` and, with
    ``checkpoint``, every file of that folder under ``checkpoint_path_in_repo/``. ``card`` is the card's text or
    the path of a README.md. Returns the ``CommitInfo``."""
    operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=path)
                  for path in student_files(folder)]
    card_bytes = Path(card).read_bytes() if isinstance(card, Path) else card.encode("utf-8")
    operations.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=card_bytes))
    if checkpoint is not None:
        root = Path(checkpoint)
        prefix = (checkpoint_path_in_repo or root.name).strip("/")
        operations += [
            CommitOperationAdd(path_in_repo=f"{prefix}/{path.relative_to(root).as_posix()}", path_or_fileobj=path)
            for path in sorted(root.rglob("*")) if path.is_file()
        ]
    api = HfApi(token=token, library_name="hf_distill", library_version=__version__)
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)


def push_student_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled depth student",
) -> str:
    """Create (or reuse) the model repo and upload the student folder in one commit: config, weights, processor,
    README.md card and the ONNX export in ``onnx/`` when there is one, nothing else (Trainer checkpoints,
    ``student_*.safetensors`` exports, logs and visualisations stay local). Returns the commit URL."""
    output_dir = Path(output_dir)
    if not (output_dir / README).is_file():
        raise FileNotFoundError(f"{output_dir / README} not found: write the student's card first")
    student_files(output_dir)  # fails before the repo is created
    api = HfApi(token=token, library_name="hf_distill", library_version=__version__)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = upload_student(repo.repo_id, output_dir, output_dir / README, token=token, revision=revision,
                            commit_message=commit_message)
    return str(commit.commit_url)
