"""The mechanisms bench's chart: one panel per prediction, from the per-setup summary (`ablation.summarize`)."""

from __future__ import annotations

import math
from pathlib import Path

NORMS = ("none", "global", "local", "hybrid")


def _panels(table: dict, specs: dict[str, str]) -> list[tuple[str, str, list, list]]:
    """(title, y label, bars as (setup, metric), teacher lines as (spec, metric)) of every panel with a bar."""
    panels = [("resolution", "edge_grad / edge_abs_rel",
               [(s, m) for s in ("res SC", "res SC+LG") for m in ("edge_grad", "edge_abs_rel")],
               [(specs["resolution"], "edge_grad"), (specs["resolution"], "edge_abs_rel")]),
              ("affine", "abs_rel", [(f"affine {c} {n}", "abs_rel") for c in ("SC", "LG") for n in NORMS],
               [(specs["affine"], "abs_rel")]),
              ("bias", "abs_rel (all / far / near)",
               [(s, m) for s in ("far only", "near only", "far+near")
                for m in ("abs_rel", "abs_rel_far", "abs_rel_near")],
               [(specs["far"], "abs_rel_far"), (specs["near"], "abs_rel_near")]),
              ("noise", "abs_rel", [("noise SC+LG", "abs_rel"), ("exact", "abs_rel")], [(specs["noise"], "abs_rel")]),
              ("normalisation, resolution teacher", "abs_rel",
               [("res SC" if (c, n) == ("SC", "global") else f"res {c} {n}", "abs_rel") for c in ("SC", "LG")
                for n in NORMS], [(specs["resolution"], "abs_rel")]),
              ("HDN families, resolution teacher", "edge_abs_rel",
               [(f"res SC+LG hybrid {v}", "edge_abs_rel") for v in ("dr", "dp", "ds")],
               [(specs["resolution"], "edge_abs_rel")])]
    kept = []
    for title, ylabel, bars, lines in panels:
        bars = [(s, m) for s, m in bars if s in table]
        if bars:
            kept.append((title, ylabel, bars, lines))
    return kept


def chart(table: dict, teachers: dict[str, dict[str, float]], path: Path, specs: dict[str, str]) -> None:
    """Bars: the metric a prediction is about, per setup (error bar: standard deviation); teachers dashed, the
    flawless-oracle student (the floor) dotted in the same colour. ``specs``: the teacher spec of each flaw
    (resolution, affine, far, near, noise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(table, specs)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 4, 4.8),
                             gridspec_kw={"width_ratios": [len(bars) + 1 for _, _, bars, _ in panels]})
    for ax, (title, ylabel, bars, lines) in zip(list(getattr(axes, "flat", [axes])), panels):
        means = [table[s][m][0] for s, m in bars]
        sds = [0.0 if math.isnan(table[s][m][1]) else table[s][m][1] for s, m in bars]
        ax.bar(range(len(bars)), means, yerr=sds, capsize=3, color="tab:blue")
        for (spec, metric), color in zip(lines, ("tab:red", "tab:orange")):
            ax.axhline(teachers[spec][metric], color=color, linestyle="--", label=f"teacher {metric}")
            if "exact" in table:  # the floor a flaw must exceed to be testable
                ax.axhline(table["exact"][metric][0], color=color, linestyle=":",
                           label=f"flawless-oracle student {metric}")
        labels = [s if m == "abs_rel" else f"{s} ({m})" for s, m in bars]
        ax.set_xticks(range(len(bars)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
