"""Model cards for distilled students and pushing them to the Hub.

Cards are rendered from ``hf_distill/templates/model_card.md`` with ``huggingface_hub.ModelCard``:
the YAML header carries pipeline_tag, library_name, base_model, datasets, licence and the
model-index (one ``EvalResult`` per benchmark and metric); the body carries teachers, recipe,
hyper-parameters, an evaluation table, usage and the method's citation.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_distill.evaluation.benchmarks import BENCHMARKS
from hf_distill.evaluation.metrics import METRIC_NAMES
from hf_distill.models import resolve_model_name

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
README = "README.md"
TASK = "depth-estimation"
NON_COMMERCIAL = "cc-by-nc-4.0"
CARD_DECIMALS = 6  # metric values in model-index are rounded to this many decimals

# Licences declared by the Hub repos of known teachers / base models. Distill-Any-Depth's *-hf repos
# could not be checked from here, so they count as unknown and never override the user's choice.
KNOWN_LICENSES: dict[str, str] = {
    "depth-anything/Depth-Anything-V2-Small-hf": "apache-2.0",
    "depth-anything/Depth-Anything-V2-Base-hf": NON_COMMERCIAL,
    "depth-anything/Depth-Anything-V2-Large-hf": NON_COMMERCIAL,
    "LiheYoung/depth-anything-small-hf": "apache-2.0",
    "LiheYoung/depth-anything-base-hf": "apache-2.0",
    "LiheYoung/depth-anything-large-hf": "apache-2.0",
}

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_EVAL_START = "<!-- hf_distill:evaluation:start -->"
_EVAL_END = "<!-- hf_distill:evaluation:end -->"
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


def resolve_license(models: list[str], license: str | None) -> str | None:
    """The student's licence given the teachers and base model it derives from.

    A CC-BY-NC-4.0 source makes the student cc-by-nc-4.0 (with a warning, also when it overrides
    ``license``). Otherwise ``license`` is kept; without one, apache-2.0 when every source is known to
    be apache-2.0, else None (with a warning asking for an explicit licence).
    """
    declared = {name: KNOWN_LICENSES.get(resolve_model_name(name)) for name in models}
    restricted = [name for name, value in declared.items() if value == NON_COMMERCIAL]
    if restricted:
        message = (
            f"{', '.join(restricted)} is licensed {NON_COMMERCIAL}: the distilled student is for "
            f"non-commercial use only and its card declares {NON_COMMERCIAL}"
        )
        if license not in (None, NON_COMMERCIAL):
            message += f" (instead of the requested {license})"
        warnings.warn(message, UserWarning, stacklevel=3)
        return NON_COMMERCIAL
    if license is not None:
        return license
    if models and all(value == "apache-2.0" for value in declared.values()):
        return "apache-2.0"
    unknown = [name for name, value in declared.items() if value is None]
    warnings.warn(
        f"the licence of {', '.join(unknown) or 'the student'} is unknown: pass license= to declare one",
        UserWarning,
        stacklevel=3,
    )
    return None


def _hub_id(name: str) -> str | None:
    """The Hub id behind an alias or id; None for local paths."""
    resolved = resolve_model_name(name)
    return resolved if not Path(name).exists() and resolved.count("/") == 1 else None


def _link(name: str) -> str:
    hub_id = _hub_id(name)
    return f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"`{name}`"


def eval_results_to_hub(eval_results: dict[str, dict[str, float]]) -> list[EvalResult]:
    """``{benchmark: {metric: value}}`` -> model-index entries (non-metric keys such as num_samples are dropped)."""
    entries = []
    for benchmark, metrics in eval_results.items():
        spec = BENCHMARKS.get(benchmark)
        for metric in METRIC_NAMES:
            value = metrics.get(metric)
            if value is None or math.isnan(value):
                continue
            entries.append(
                EvalResult(
                    task_type=TASK,
                    task_name="Relative depth estimation",
                    dataset_type=spec.hub_dataset if spec else benchmark,
                    dataset_name=spec.display_name if spec else benchmark,
                    dataset_split=spec.split if spec else None,
                    metric_type=metric,
                    metric_name=_METRIC_HEADERS[metric],
                    metric_value=round(float(value), CARD_DECIMALS),
                )
            )
    return entries


def merge_eval_results(existing: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
    """Existing entries with the same task, dataset, split and metric get the new value; others are appended."""

    def key(entry: EvalResult) -> tuple:
        return entry.task_type, entry.dataset_type, entry.dataset_split, entry.metric_type

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


def build_model_card(
    *,
    model_name: str,
    base_model: str | None,
    teachers: list[str],
    datasets: list[str] | None = None,
    hyperparameters: dict | None = None,
    eval_results: dict[str, dict[str, float]] | None = None,
    license: str | None = None,
) -> ModelCard:
    """Render the card of a distilled student.

    Args:
        model_name: the Hub repo id the card's usage snippets load (or a local name).
        base_model: alias / Hub id the student was initialised from (None when trained from scratch).
        teachers: aliases / Hub ids / local paths of the teachers.
        datasets: Hub dataset ids or descriptions of the training data.
        hyperparameters: shown as a table (e.g. the distillation arguments).
        eval_results: ``{benchmark: {metric: value}}`` as written by ``scripts/evaluate.py``.
        license: the user's licence; a CC-BY-NC-4.0 teacher or base model overrides it (with a warning).
    """
    sources = list(teachers) + ([base_model] if base_model else [])
    resolved_license = resolve_license(sources, license)
    entries = eval_results_to_hub(eval_results or {})
    base_hub_id = _hub_id(base_model) if base_model else None
    card_data = ModelCardData(
        model_name=model_name,
        license=resolved_license,
        library_name="transformers",
        pipeline_tag=TASK,
        base_model=base_hub_id,
        # Only Hub dataset ids go in the metadata; paths and descriptions stay in the text.
        datasets=[d for d in datasets or [] if _HUB_ID.match(d) and not Path(d).exists()] or None,
        tags=["depth-estimation", "depth-anything", "knowledge-distillation", "distill-any-depth"],
        eval_results=entries or None,
    )
    license_text = resolved_license or "not declared"
    if resolved_license == NON_COMMERCIAL:
        license_text += " (non-commercial: derived from a CC-BY-NC-4.0 teacher or base model)"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        base_model_text=_link(base_model) if base_model else "",
        teachers_text=", ".join(_link(t) for t in teachers) or "not recorded",
        datasets=datasets or [],
        license_text=license_text,
        hyperparameters_table=_hyperparameters_table(hyperparameters),
        evaluation_table=evaluation_table(entries),
    )


def update_model_card(model_dir: str | Path, eval_results: dict[str, dict[str, float]]) -> ModelCard:
    """Write evaluation results into ``model_dir/README.md`` and return the card.

    An existing card keeps its text and metadata: model-index entries for the same dataset and metric
    get the new value, others are appended, and the evaluation table between the hf_distill markers is
    regenerated (appended as a new section when the card has no markers). Without a card, a new one
    is rendered (teachers unknown).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} not found")
    path = model_dir / README
    if not path.is_file():
        card = build_model_card(model_name=model_dir.name, base_model=None, teachers=[], eval_results=eval_results)
        card.save(path)
        return card
    card = ModelCard.load(path)
    entries = merge_eval_results(card.data.eval_results or [], eval_results_to_hub(eval_results))
    card.data.eval_results = entries
    card.data.model_name = card.data.model_name or model_dir.name
    block = f"{_EVAL_START}\n{evaluation_table(entries)}\n{_EVAL_END}"
    text = card.text
    if _EVAL_START in text and _EVAL_END in text:
        head, rest = text.split(_EVAL_START, 1)
        text = head + block + rest.split(_EVAL_END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Evaluation\n\n{block}\n"
    card.text = text
    card.save(path)
    return card


PUSH_IGNORE_PATTERNS = [
    "checkpoint-*",
    "checkpoint-*/**",
    "student_*.safetensors",
    "runs/**",
    "visualizations/**",
    "*.pth",
    "*.pt",
    "training_args.bin",
]


def push_student_to_hub(
    output_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload distilled depth student",
) -> str:
    """Create (or reuse) the model repo and upload the student folder: weights, configs, card.

    Trainer checkpoints, seed-style ``student_*.safetensors`` copies, logs and visualisations stay
    local. Returns the commit URL.
    """
    output_dir = Path(output_dir)
    for required in ("config.json", README):
        if not (output_dir / required).is_file():
            raise FileNotFoundError(f"{output_dir / required} not found: save the student and its card first")
    if not any(output_dir.glob("model*.safetensors")):
        raise FileNotFoundError(f"no model*.safetensors in {output_dir}: save the student first")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(output_dir),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=PUSH_IGNORE_PATTERNS,
    )
    return str(commit.commit_url)
