"""The oracle teacher: the exact disparity of generated scenes' views, spoilt by chosen flaws
(``hf_distill.oracle``)."""

from __future__ import annotations

import torch
from torch import Tensor

from hf_distill.oracle import OracleSpec, degrade, parse_oracle_spec
from hf_distill.teachers.base import Teacher, TeacherFamily


class OracleTeacher(Teacher):
    """An oracle (``hf_distill.oracle``): the exact disparity of each view, from the exact depth the data path hands
    it, spoilt by the flaws its spec names (``oracle:resolution=28,affine=0.5``). Only data with exact depth
    (generated scenes) can feed it.

    Args:
        spec: its flaws; family: its row in ``TEACHER_FAMILIES``.
    """

    needs_depth = True

    def __init__(self, spec: OracleSpec, family: TeacherFamily) -> None:
        super().__init__(family)
        self.spec = spec
        self.generator = torch.Generator().manual_seed(spec.seed)  # the affine and noise draws

    def forward(self, views: Tensor, want_tokens: bool = False, depth: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """``depth``: (N, H, W) exact depth in metres of the N views (0 = invalid)."""
        self.check_tokens(want_tokens)
        if depth is None:
            raise ValueError(f"the {self.spec} teacher needs the exact depth of its views: train on generated "
                             "scenes (--dataset_format generated)")
        if depth.shape != (views.shape[0], *views.shape[-2:]):
            raise ValueError(f"depth {tuple(depth.shape)} does not match views {tuple(views.shape)}")
        return degrade(depth, self.spec, self.generator).to(views.device), None

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily) -> OracleTeacher:
        if checkpoint is not None:
            raise ValueError(f"--teacher_checkpoints {checkpoint}: an oracle teacher ({name}) has no weights.")
        return cls(parse_oracle_spec(name), family)
