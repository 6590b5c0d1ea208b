"""The preflight's report: one ``CheckResult`` row per finding, the context the checks share, the printed table."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments

PASS, WARN, FAIL = "ok", "WARN", "FAIL"
GIB = 1024**3


@dataclass
class CheckResult:
    """One row of the report: which check, its status (``PASS``/``WARN``/``FAIL``), what it found, how to fix it."""

    check: str
    status: str
    result: str
    fix: str = ""


@dataclass
class PreflightContext:
    """The resolved recipe, shared by the checks (they may leave what they computed in ``facts``)."""

    model_args: ModelArguments
    data_args: DataArguments
    args: DistillationArguments
    facts: dict = field(default_factory=dict)


@dataclass
class PreflightReport:
    """Every row of a preflight, in order; ``passed`` when none failed."""

    rows: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(row.status != FAIL for row in self.rows)

    def format(self) -> str:
        """The report as a fixed-width table (check | result | fix) and a last line saying what to do."""
        widths = [max(len(h), *(len(getattr(r, a)) for r in self.rows)) for h, a in
                  (("check", "check"), ("status", "status"))]
        lines = [f"{'check':<{widths[0]}}  {'status':<{widths[1]}}  result | fix"]
        for row in self.rows:
            fix = f" | fix: {row.fix}" if row.fix else ""
            lines.append(f"{row.check:<{widths[0]}}  {row.status:<{widths[1]}}  {row.result}{fix}")
        failures = sum(row.status == FAIL for row in self.rows)
        lines.append(f"preflight: {'passed' if self.passed else f'{failures} check(s) failed'}")
        return "\n".join(lines)


Check = Callable[[PreflightContext], Iterable[CheckResult]]


def gib(n: float) -> str:
    """A byte count in GiB (MiB below a tenth of a GiB), for report rows."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def error_summary(error: Exception) -> str:
    """An error as a report row shows it: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
