"""benchmarks/ablation.py --quick end to end, and its detail metric on a hand-made edge."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _ablation_module():
    return importlib.import_module("benchmarks.ablation")


def test_edge_gradient_error_counts_only_pairs_next_to_depth_edges():
    ablation = _ablation_module()
    gt = torch.ones(6, 8)
    gt[:, 4:] = 2.0  # one vertical edge between columns 3 and 4
    valid = torch.ones(6, 8, dtype=torch.bool)
    assert ablation.edge_gradient_error(gt.clone(), gt, valid) == 0.0
    blurred = gt.clone()
    blurred[:, 4] = 1.5  # the edge spread over two pixels: log steps log(1.5) and log(4/3) instead of log(2), 0
    error = ablation.edge_gradient_error(blurred, gt, valid)
    # horizontal pairs within one pixel of the edge: columns 2-3, 3-4, 4-5 (errors 0, log 2 - log 1.5, log(4/3))
    expected = (0 + (torch.log(torch.tensor(2.0)) - torch.log(torch.tensor(1.5))) + torch.log(torch.tensor(4 / 3))) / 3
    assert error == pytest.approx(float(expected), rel=1e-5)
    flat = torch.full((6, 8), 3.0)
    assert math.isnan(ablation.edge_gradient_error(flat * 1.1, flat, valid))  # no edge: nothing to score


def test_quick_ablation_writes_json_table_and_chart(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.ablation", "--quick", "--output_dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["config"] for r in report["runs"]] == ["SC", "SC+LG"]
    for run in report["runs"]:
        assert 0 < run["metrics"]["abs_rel"] < 10 and 0 <= run["metrics"]["delta1"] <= 1
        assert run["metrics"]["edge_grad"] > 0 and run["wall_time_s"] > 0
        assert [step for step, _ in run["curve"]] == [3, 6]
    table = (tmp_path / "ablation.md").read_text()
    assert "| SC+LG |" in table and "teacher (demo-teacher)" in table
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
