"""A preflight before a long run (``scripts/distill.py ... --preflight``): every problem of a recipe reported at once,
then one real training step and one evaluation batch, like Lightning's ``fast_dev_run``.

The recipe is resolved exactly as training resolves it (the same three argument dataclasses). Each check is one small
function in ``PREFLIGHT_CHECKS`` that returns ``CheckResult`` rows (check | result | fix); a check that raises is a
failed row naming the error, so one broken part never hides the others. When every check passes, the real models
train one step and evaluate one batch in a temporary output folder (nothing of the real run is written).

    report = run_preflight(model_args, data_args, training_args)
    print(report.format())
    sys.exit(0 if report.passed else 1)
"""

from collections.abc import Iterable

from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments
from hf_distill.training.preflight.data import check_training_data, check_views
from hf_distill.training.preflight.dev_run import fast_dev_run
from hf_distill.training.preflight.evaluation import check_evaluation
from hf_distill.training.preflight.hub import check_hub
from hf_distill.training.preflight.models import check_student, check_teachers
from hf_distill.training.preflight.report import (
    FAIL,
    PASS,
    WARN,
    Check,
    CheckResult,
    PreflightContext,
    PreflightReport,
    error_summary,
)
from hf_distill.training.preflight.resources import check_disk, check_memory, estimate_memory, free_memory

PREFLIGHT_CHECKS: list[Check] = [check_teachers, check_student, check_training_data, check_views, check_memory,
                                 check_disk, check_hub, check_evaluation]


def run_preflight(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: DistillationArguments,
    *,
    checks: list[Check] | None = None,
    dev_run: bool = True,
    host_rows: Iterable[CheckResult] = (),
) -> PreflightReport:
    """Run every check (``PREFLIGHT_CHECKS`` by default), then, when none failed and ``dev_run``, one real training
    step and one evaluation batch; ``host_rows`` (``preflight.host.parse_for_preflight``) open the report. Nothing is written to ``args.output_dir`` (or its nearest existing parent) but a
    probe file, removed at once."""
    ctx = PreflightContext(model_args, data_args, args)
    rows: list[CheckResult] = list(host_rows)  # what parsing found about this host
    for check in checks if checks is not None else PREFLIGHT_CHECKS:
        try:
            rows += list(check(ctx))
        except Exception as error:  # noqa: BLE001  (a broken check is a failed row, never a hidden one)
            rows.append(CheckResult(check.__name__.removeprefix("check_"), FAIL, error_summary(error), "see the error"))
    if dev_run:
        if all(row.status != FAIL for row in rows):
            rows += list(fast_dev_run(ctx))
        else:
            rows.append(CheckResult("one training step", WARN, "not run: fix the failures above first"))
    return PreflightReport(rows)


__all__ = [
    "FAIL", "PASS", "PREFLIGHT_CHECKS", "WARN", "Check", "CheckResult", "PreflightContext", "PreflightReport",
    "check_disk", "check_evaluation", "check_hub", "check_memory", "check_student", "check_teachers",
    "check_training_data", "check_views", "estimate_memory", "fast_dev_run", "free_memory", "run_preflight",
]
