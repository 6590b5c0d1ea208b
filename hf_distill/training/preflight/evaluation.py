"""Preflight check of evaluation: with ``--eval_strategy``, the evaluation data exists and has depth."""

from __future__ import annotations

from collections.abc import Iterable

from hf_distill.training.data import build_eval_dataset, resolve_eval_data
from hf_distill.training.preflight.host import evaluation_rows
from hf_distill.training.preflight.report import FAIL, CheckResult, PreflightContext, error_summary


def check_evaluation(ctx: PreflightContext) -> Iterable[CheckResult]:
    """With ``--eval_strategy``: the evaluation data exists and has depth."""
    args = ctx.args
    if args.eval_strategy == "no":
        return
    try:
        if resolve_eval_data(ctx.data_args, args) is None:
            raise ValueError("no evaluation data")
        samples = build_eval_dataset(ctx.data_args, args)
        rows = list(evaluation_rows(samples, CheckResult))  # depth in metres, 0 where the mask is off
    except Exception as error:  # noqa: BLE001
        yield CheckResult("evaluation", FAIL, error_summary(error),
                          "set --eval_dataset_name (+ --depth_column) or --eval_dataset_dir, or --eval_strategy no")
        return
    yield from rows
