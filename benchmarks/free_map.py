"""The free-map student: one learnable disparity map per training scene, trained by the real `DistillationTrainer`.

A network student cannot learn detail finer than its own floor, so a bench on it cannot tell whether a loss transfers
detail. The free map has no floor: scene ``i`` owns a (H, W) map at the scene's resolution, and its prediction for a
view is that map read through the view's region box, resized to the global view's side exactly as the view itself is
(bilinear, antialiased). What the map becomes is decided by the losses alone.

Everything but the student is the library's: the views, crops and boxes (``ViewSampler`` / ``ViewDataset`` and
``collate_views``), the teachers (``build_teacher``, oracle teachers), the per-step teacher draw, the loss
(``DistillationLoss`` inside ``DistillationTrainer.compute_loss``), the optimiser and schedule (the Trainer's). The
only additions: each sample also carries its scene index and region (``SceneViews``, recomputed with the sampler's own
``sample_geometry``), and ``FreeMapTrainer.compute_loss`` hands them to the student before calling the trainer's
``compute_loss`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hf_distill.data import collate_views
from hf_distill.data.views import ViewDataset
from hf_distill.training.trainer import DistillationTrainer

INIT_LEVEL = 0.5  # the maps start flat at this disparity (about 2 m), with INIT_NOISE relative noise
INIT_NOISE = 0.01


class FreeMaps(nn.Module):
    """(N, H, W) learnable disparity maps, one per training scene, held as their logarithm: a map stays positive
    (a disparity), and an optimiser step changes it by a relative amount whatever its scale, which the
    scale-invariant losses leave free.

    Args:
        num_scenes: N. height, width: the scenes' size in pixels.
        seed: draws the initial noise (maps start at ``INIT_LEVEL * exp(INIT_NOISE * e)``, e ~ N(0, 1)).
    """

    def __init__(self, num_scenes: int, height: int, width: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((num_scenes, height, width), generator=generator)
        self.log_maps = nn.Parameter(math.log(INIT_LEVEL) + INIT_NOISE * noise)

    def forward(self, scenes: torch.Tensor, regions: torch.Tensor, size: int) -> torch.Tensor:
        """Views of the maps: scene ``scenes[b]`` (B,) long, region ``regions[b]`` = (x0, y0, S) (B, 3) integer
        pixels, resized to ``size`` x ``size`` (bilinear, antialiased, as the global view); returns (B, size, size)."""
        views = []
        selected = self.log_maps.index_select(0, scenes.to(self.log_maps.device)).exp().unbind(0)
        for selected_map, (x0, y0, side) in zip(selected, regions.tolist()):
            crop = selected_map[y0:y0 + side, x0:x0 + side]
            if side != size:
                crop = F.interpolate(crop[None, None], size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=True)[0, 0]
            views.append(crop)
        return torch.stack(views)


class FreeMapStudent(nn.Module):
    """The trainable module ``DistillationTrainer`` expects (``student``, ``projectors``, ``forward(pixel_values,
    teacher_index)``), with free maps as the student: ``select`` names the scenes and regions of the next batch, and
    ``forward`` returns their views at the pixel values' size. No encoder tokens: the feature term is skipped."""

    def __init__(self, maps: FreeMaps) -> None:
        super().__init__()
        self.student = maps
        self.projectors = nn.ModuleList()
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def select(self, scenes: torch.Tensor, regions: torch.Tensor) -> None:
        """The scenes (B,) and regions (B, 3) of the batch the next ``forward`` is given."""
        self._batch = (scenes, regions)

    def forward(self, pixel_values: torch.Tensor, teacher_index: int | None = None) -> tuple[torch.Tensor, None]:
        """(B, 3, G, G) views (only their size is read) -> the selected maps' views (B, G, G), no tokens."""
        if teacher_index is not None:
            raise ValueError("a free-map student has no encoder tokens: run it with --lambda_feat 0 or token-less "
                             "teachers")
        if self._batch is None or len(self._batch[0]) != pixel_values.shape[0]:
            raise ValueError("FreeMapStudent.forward: select() the batch's scenes and regions first")
        scenes, regions = self._batch
        self._batch = None
        return self.student(scenes, regions, pixel_values.shape[-1]), None

    def has_unused_projectors(self) -> bool:
        return False


class SceneViews(torch.utils.data.Dataset):
    """A ``ViewDataset`` whose samples also carry ``scene_index`` (the example drawn) and ``region`` (x0, y0, S): the
    sampler's own ``sample_geometry`` for the same (seed, epoch, index), so the same region the views were cut from.

    Args:
        views: the library's view dataset over generated scenes (every scene readable: none is skipped).
        scene_size: (height, width) of the scenes.
    """

    def __init__(self, views: ViewDataset, scene_size: tuple[int, int]) -> None:
        self.views = views
        self.height, self.width = scene_size

    def set_epoch(self, epoch: int) -> None:
        self.views.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.views[index]
        if sample["skipped"]:
            raise RuntimeError(f"scene {index} was skipped: a free map needs every scene")
        geometry = self.views.sampler.sample_geometry(self.width, self.height, epoch=self.views.epoch, index=index)
        sample["scene_index"] = index
        sample["region"] = (geometry.x0, geometry.y0, geometry.size)
        return sample


def collate_scene_views(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """``collate_views`` plus scene_index (B,) long and region (B, 3) long."""
    batch = collate_views(samples)
    batch["scene_index"] = torch.tensor([s["scene_index"] for s in samples], dtype=torch.long)
    batch["region"] = torch.tensor([s["region"] for s in samples], dtype=torch.long)
    return batch


class FreeMapTrainer(DistillationTrainer):
    """``DistillationTrainer`` whose student is a ``FreeMapStudent``: each batch's scenes and regions are handed to
    the student, then the trainer's own ``compute_loss`` runs unchanged (teacher draw, teacher, loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.accelerator.unwrap_model(model).select(inputs["scene_index"], inputs["region"])
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


@dataclass(frozen=True)
class SceneSample:
    """A training scene's exact depth (H, W) metres and validity, for scoring a map."""

    name: str
    depth: np.ndarray
    valid: np.ndarray
    image: Any = None


def build_free_map_trainer(argv: list[str]) -> FreeMapTrainer:
    """A ``FreeMapTrainer`` for distillation flags ``argv`` (as ``scripts/distill.py`` takes them; generated scenes
    and oracle teachers): the library's views, teachers and loss, free maps as the student."""
    from transformers import set_seed

    from hf_distill.hub import display_name
    from hf_distill.teachers import build_teacher
    from hf_distill.training.cli import parse_distill_args
    from hf_distill.training.run import build_datasets

    model_args, data_args, args = parse_distill_args(argv)
    if data_args.dataset_format != "generated":
        raise ValueError("a free-map student needs generated scenes (--dataset_format generated)")
    set_seed(args.seed)
    views, _ = build_datasets(data_args, args, teacher_depth=True)
    # Rendered once: the scenes are few and revisited every step (the source renders a scene on every access).
    views = ViewDataset([views.source[i] for i in range(len(views))], views.sampler)
    height, width = (int(v) for v in data_args.generated_scene_size)
    teachers = [build_teacher(name) for name in model_args.teacher_models]
    if args.lambda_feat > 0 and any(t.token_width is not None for t in teachers):
        raise ValueError("a free-map student has no encoder tokens: use --lambda_feat 0 with teachers that have them")
    return FreeMapTrainer(
        model=FreeMapStudent(FreeMaps(len(views), height, width, seed=args.seed)),
        teachers=teachers,
        args=args,
        train_dataset=SceneViews(views, (height, width)),
        data_collator=collate_scene_views,
        teacher_names=[display_name(name) for name in model_args.teacher_models],
        student_mean_std=([0.0] * 3, [1.0] * 3),
        teacher_probabilities=model_args.teacher_probabilities,
    )


def training_scenes(num_scenes: int, side: int) -> list[SceneSample]:
    """The generated training scenes a free-map run with ``--num_generated_scenes num_scenes`` and
    ``--generated_scene_size side side`` trains on (the same renders, in map order), with their exact depth."""
    from hf_distill.data.sources import load_generated_scenes

    source = load_generated_scenes(num_scenes, size=(side, side), with_depth=True)
    samples = []
    for index in range(num_scenes):
        row = source[index]
        depth = np.asarray(row["depth"], np.float32)
        samples.append(SceneSample(f"scene_{index:04d}", depth, np.isfinite(depth) & (depth > 0), row["image"]))
    return samples


def trained_maps(trainer: FreeMapTrainer) -> list[torch.Tensor]:
    """The learnt maps (H, W), detached, in scene order."""
    return list(trainer.accelerator.unwrap_model(trainer.model).student.log_maps.detach().float().exp())
