"""Complete checkpoints only: a manifest written last, and resume that skips anything incomplete.

A ``checkpoint-N/`` folder is assembled under ``output_dir/.staging/`` and renamed into place once every file of
every rank is written (``AtomicCheckpointMixin``, part of ``DistillationTrainer``), so a kill leaves either a whole
checkpoint or none. The manifest (each file's size) also tells a folder that was truncated or emptied afterwards, or written by
something else, from a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_distill.data.views import IterableViewDataset
from hf_distill.training.engines import is_zero3

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint_manifest.json"
STAGING_DIR = ".staging"
PROJECTORS_NAME = "projectors.safetensors"
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


class AtomicCheckpointMixin:
    """``DistillationTrainer``'s checkpoint methods: ``checkpoint-N/`` written whole or not at all (student folder,
    optimizer, scheduler, RNG, trainer state, projectors, stream positions, manifest), and restored."""

    _staging_checkpoint = False  # True while the Trainer writes a checkpoint: its folder goes under STAGING_DIR

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging_checkpoint else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """Write ``checkpoint-N`` atomically: the Trainer's files (student folder, optimizer, scheduler, RNG of every
        rank, trainer state), the projectors, the stream positions and a manifest go to a staging folder that is
        renamed into place when complete; older checkpoints are rotated only after that."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING_DIR / name, run_dir / name
        if self.args.should_save and staged.parent.exists():
            shutil.rmtree(staged.parent)  # what a run killed while saving left
        self.accelerator.wait_for_everyone()
        self._staging_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_checkpoint = False
        if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staged.parent:
            self.state.best_model_checkpoint = str(run_dir / Path(self.state.best_model_checkpoint).name)
        if isinstance(self.train_dataset, IterableViewDataset):
            self.stream_state.save(staged, self.args.process_index)
        state = self.student_state_dict() if is_zero3(self.accelerator) else None  # collective: every rank
        if self.args.should_save:
            if state is None:
                state = self.accelerator.unwrap_model(self.model).state_dict()
            projectors = {k[len("projectors."):]: v for k, v in state.items() if k.startswith("projectors.")}
            if projectors:
                save_file({k: v.contiguous() for k, v in projectors.items()}, str(staged / PROJECTORS_NAME))
        self.accelerator.wait_for_everyone()  # every rank's files are in the staging folder
        if self.args.should_save:
            write_manifest(staged)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            staged.parent.rmdir()  # empty again
            rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
            if self.args.push_to_hub:
                self.push_checkpoint(final)  # complete and in place: safe to upload in the background
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore student and projectors (``from_pretrained`` maps the on-disk key names onto the module's); ``train``
        has checked the checkpoint and positioned streamed data."""
        module = self.accelerator.unwrap_model(model or self.model)
        folder = Path(resume_from_checkpoint)
        saved = type(module.student).from_pretrained(folder, dtype=next(module.student.parameters()).dtype)
        module.student.load_state_dict(saved.state_dict(), strict=True)
        if (folder / PROJECTORS_NAME).is_file():
            module.projectors.load_state_dict(load_file(str(folder / PROJECTORS_NAME)), strict=True)
        elif module.projectors.state_dict():
            raise ValueError(f"Can't resume from {folder}: {PROJECTORS_NAME} is missing.")
