"""Demo runs for the research benches: the demo recipe's command line at bench scale, and their worker setup."""

from __future__ import annotations

import os
from pathlib import Path

SCENE_SIDE = 224  # square generated scenes; regions are drawn from SCENE_SIDE // 2 to SCENE_SIDE pixels


def demo_run_argv(output_dir: str | Path, seed: int, steps: int) -> list[str]:
    """The ``scripts/distill.py`` arguments of one bench run: the demo recipe (``--config demo``) for ``steps`` steps
    with ``seed``, on ``SCENE_SIDE`` x ``SCENE_SIDE`` generated scenes, writing nothing but the student to
    ``output_dir`` (no checkpoints, visualisations or progress bar; one log line at the end). A bench appends its
    own flags, which win over these."""
    return ["--config", "demo", "--output_dir", str(output_dir), "--seed", str(seed), "--max_steps", str(steps),
            "--warmup_steps", str(max(steps // 20, 1)), "--generated_scene_size", str(SCENE_SIDE), str(SCENE_SIDE),
            "--min_region", str(SCENE_SIDE // 2), "--save_strategy", "no", "--visualize_steps", "0",
            "--logging_steps", str(steps), "--disable_tqdm", "true"]


def init_worker() -> None:
    """Initialiser of a bench's worker processes: the runs read only local models and generated data (no Hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
