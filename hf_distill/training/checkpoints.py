"""Complete checkpoints only: a manifest written last, and resume that skips anything incomplete.

A ``checkpoint-N/`` folder is assembled under ``output_dir/.staging/`` and renamed into place once every file of
every rank is written (``DistillationTrainer._save_checkpoint``), so a kill leaves either a whole checkpoint or
none. The manifest (each file's size) also tells a folder that was truncated or emptied afterwards, or written by
something else, from a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint_manifest.json"
STAGING_DIR = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def write_manifest(folder: str | Path) -> None:
    """Record the size of every file under ``folder`` (written last: its presence means the rest is there)."""
    folder = Path(folder)
    sizes = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST_NAME}
    temporary = folder / f"{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps({"files": sizes}, indent=1))
    os.replace(temporary, folder / MANIFEST_NAME)


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (missing manifest, missing or truncated file), else None."""
    folder = Path(folder)
    try:
        sizes = json.loads((folder / MANIFEST_NAME).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST_NAME} (the checkpoint was never finished)"
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST_NAME}"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes instead of {size} (truncated)"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The ``checkpoint-N`` folder of ``output_dir`` with the highest N that is complete, warning about every newer
    incomplete one it passes over; None when there is none."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    for _, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        logger.warning("Not resuming from %s: %s. Looking for an older complete checkpoint.", folder, problem)
    return None
