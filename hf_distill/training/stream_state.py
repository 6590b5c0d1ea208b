"""Where each DataLoader worker's stream of raw examples stands: kept on the device, saved with checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch

STREAM_STATE_NAME = "stream_state_{rank}.json"


class StreamState:
    """Streamed data (``IterableViewDataset``): the next raw example of each DataLoader worker in the current pass
    (``epoch``). Positions arrive with every micro-batch as device tensors and stay there (``record``); they are read
    back to the host only when a checkpoint asks for them (``positions``)."""

    def __init__(self) -> None:
        self.epoch = 0
        self._read: dict[int, int] = {}
        self._reached: torch.Tensor | None = None  # (workers,) next raw example per worker, on the device

    def record(self, position: torch.Tensor, worker: torch.Tensor, epoch: int, num_workers: int) -> None:
        """Note a micro-batch: ``position`` (B,) each sample's raw position in its worker's stream, ``worker`` (B,)
        that worker, ``epoch`` the pass they belong to (a new pass starts from the stream's beginning),
        ``num_workers`` the loader's worker count (0: the main process)."""
        if epoch != self.epoch:
            self.epoch, self.positions = epoch, {}
        reached = self._reached
        if reached is None:
            reached = position.new_zeros(max(1, num_workers))
        self._reached = reached.scatter_reduce(0, worker, position + 1, "amax")

    @property
    def positions(self) -> dict[int, int]:
        """DataLoader worker -> next raw example (reads the positions kept on the device once)."""
        reached, self._reached = self._reached, None
        if reached is not None:
            for worker, position in enumerate(reached.tolist()):
                if position > 0:
                    self._read[worker] = max(self._read.get(worker, 0), position)
        return self._read

    @positions.setter
    def positions(self, positions: dict[int, int]) -> None:
        self._reached = None
        self._read = positions

    def save(self, folder: Path, rank: int) -> None:
        """Write this rank's state into checkpoint ``folder`` (``stream_state_{rank}.json``)."""
        state = {"epoch": self.epoch, "positions": self.positions}
        (Path(folder) / STREAM_STATE_NAME.format(rank=rank)).write_text(json.dumps(state))

    def load(self, folder: Path, rank: int) -> None:
        """Read this rank's state from checkpoint ``folder``; ValueError when the checkpoint has none for it."""
        rank_file = Path(folder) / STREAM_STATE_NAME.format(rank=rank)
        if not rank_file.is_file():
            raise ValueError(f"Can't resume streamed data from {folder}: {rank_file.name} is missing (a checkpoint "
                             f"written with another number of processes?).")
        state = json.loads(rank_file.read_text())
        self.epoch = int(state["epoch"])
        self.positions = {int(w): int(p) for w, p in state["positions"].items()}
