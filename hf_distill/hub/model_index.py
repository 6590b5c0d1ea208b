"""The model-index of a card: evaluation results as Hub ``EvalResult`` entries, merged, and their Markdown table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from huggingface_hub import EvalResult

from hf_distill.evaluation.benchmarks import BENCHMARKS
from hf_distill.evaluation.metrics import METRIC_NAMES

TASK = "depth-estimation"
TASK_NAME = "Relative depth estimation"
CARD_DECIMALS = 6  # metric values in model-index are rounded to this many decimals
# The dataset_config of model-index entries of training-time evaluation ("training-time-best", ...): a group of
# model-index results is one (task, dataset, config, split), so best, last and scripts/evaluate.py's entries of the
# same dataset need distinct configs. A new card replaces all training-time entries.
TRAINING_CONFIG = "training-time"
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
