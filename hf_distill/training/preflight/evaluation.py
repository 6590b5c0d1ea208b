"""Preflight check of evaluation: with ``--eval_strategy``, the evaluation data exists and has depth."""

from __future__ import annotations

from collections.abc import Iterable

from hf_distill.training.data import build_eval_dataset, resolve_eval_data
from hf_distill.training.preflight.report import FAIL, PASS, CheckResult, PreflightContext, error_summary


def check_evaluation(ctx: PreflightContext) -> Iterable[CheckResult]:
    """With ``--eval_strategy``: the evaluation data exists and has depth."""
    args = ctx.args
    if args.eval_strategy == "no":
        return
    try:
        if resolve_eval_data(ctx.data_args, args) is None:
            raise ValueError("no evaluation data")
        samples = build_eval_dataset(ctx.data_args, args)
        valid = int((samples[0]["reference"] > 0).sum())  # depth in metres, 0 where the benchmark's mask is off
    except Exception as error:  # noqa: BLE001
        yield CheckResult("evaluation", FAIL, error_summary(error),
                          "set --eval_dataset_name (+ --depth_column) or --eval_dataset_dir, or --eval_strategy no")
        return
    if valid == 0:
        yield CheckResult("evaluation", FAIL, "the first evaluation sample has no valid depth pixel",
                          "check --depth_column and the depth units (metres)")
        return
    yield CheckResult("evaluation", PASS, f"{len(samples)} samples with depth ({valid} valid pixels in the first)")
