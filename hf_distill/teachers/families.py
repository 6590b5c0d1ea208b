"""The table of teacher families (``TEACHER_FAMILIES``): each family's output space and the teacher that runs it,
and ``build_teacher``, which picks the family of a name."""

from __future__ import annotations

import json
from pathlib import Path

from hf_distill.models import load_model_config
from hf_distill.oracle import ORACLE
from hf_distill.teachers.base import Teacher, TeacherFamily
from hf_distill.teachers.genpercept import TEACHER_CONFIG_NAME, GenPerceptTeacher
from hf_distill.teachers.oracle import OracleTeacher
from hf_distill.teachers.spaces import ENTERS_AS, REFUSAL_REASON, OutputSpace
from hf_distill.teachers.transformers_teacher import TransformersDepthTeacher

# The one table of output spaces. Keys: transformers model_type (":metric" for Depth Anything's metric heads), or
# a family alias for models outside transformers. Raw outputs are declared as the networks give them:
# Depth Pro's `predicted_depth` is its canonical inverse depth (its post-processing is what turns it into metres).
TEACHER_FAMILIES: dict[str, TeacherFamily] = {
    "depth_anything": TeacherFamily("Depth Anything (V1, V2, Distill-Any-Depth)", OutputSpace.DISPARITY,
                                    TransformersDepthTeacher, "depth_anything", tokens=True, input_multiple=14),
    "depth_anything:metric": TeacherFamily("Depth Anything metric", OutputSpace.METRIC_DEPTH,
                                           TransformersDepthTeacher, "depth_anything", tokens=True, input_multiple=14),
    "dpt": TeacherFamily("DPT / MiDaS", OutputSpace.DISPARITY, TransformersDepthTeacher, "dpt", input_multiple=32),
    "zoedepth": TeacherFamily("ZoeDepth", OutputSpace.METRIC_DEPTH, TransformersDepthTeacher, "zoedepth",
                              input_multiple=32),
    "depth_pro": TeacherFamily("Depth Pro", OutputSpace.INVERSE_DEPTH, TransformersDepthTeacher, "depth_pro",
                               input_side=lambda c: round(c.patch_size / min(c.scaled_images_ratios))),
    "genpercept-disparity": TeacherFamily("GenPercept disparity", OutputSpace.MINMAX_DISPARITY, GenPerceptTeacher),
    "genpercept-depth": TeacherFamily("GenPercept depth", OutputSpace.AFFINE_DEPTH, None),
    "marigold-depth": TeacherFamily("Marigold depth", OutputSpace.AFFINE_DEPTH, None),
    ORACLE: TeacherFamily("Oracle (exact depth of generated scenes, chosen flaws)", OutputSpace.DISPARITY,
                          OracleTeacher, needs_depth=True),
}

# Names that are families themselves (models outside transformers).
TEACHER_ALIASES = tuple(key for key, family in TEACHER_FAMILIES.items() if family.model_type is None)
# Of those, the ones a local diffusers folder can declare in its teacher_config.json (not the oracle).
FOLDER_FAMILIES = tuple(key for key in TEACHER_ALIASES if not TEACHER_FAMILIES[key].needs_depth)


def read_teacher_config(folder: Path) -> dict:
    """The settings of a local diffusers teacher folder (its ``teacher_config.json``), its family checked."""
    path = folder / TEACHER_CONFIG_NAME
    if not path.is_file():
        raise ValueError(
            f"{folder} holds a diffusers model but no {TEACHER_CONFIG_NAME} saying what it predicts: write "
            f'{{"family": "genpercept-disparity"}} into it (families: {", ".join(FOLDER_FAMILIES)}).'
        )
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if settings.get("family") not in FOLDER_FAMILIES:
        raise ValueError(f"{path}: 'family' must be one of {', '.join(FOLDER_FAMILIES)}, "
                         f"got {settings.get('family')!r}")
    return settings


def teacher_family(name_or_path: str) -> TeacherFamily:
    """The declared family of a teacher name: a family alias, a local diffusers folder (its teacher_config.json) or
    any transformers depth model (its config's model_type). Raises ValueError for undeclared families."""
    if name_or_path in TEACHER_ALIASES:
        return TEACHER_FAMILIES[name_or_path]
    if teacher_needs_depth(name_or_path):
        return TEACHER_FAMILIES[name_or_path.partition(":")[0]]
    folder = Path(name_or_path)
    if folder.is_dir() and ((folder / "unet").is_dir() or (folder / TEACHER_CONFIG_NAME).is_file()):
        return TEACHER_FAMILIES[read_teacher_config(folder)["family"]]
    config = load_model_config(name_or_path)
    key = config.model_type + (":metric" if getattr(config, "depth_estimation_type", None) == "metric" else "")
    if key not in TEACHER_FAMILIES:
        declared = ", ".join(k for k, f in TEACHER_FAMILIES.items() if f.model_type is not None)
        raise ValueError(
            f"Teacher '{name_or_path}': the output space of model type '{key}' is not declared, so it cannot be "
            f"turned into disparity safely. Declared transformers families: {declared}; others: "
            f"{', '.join(TEACHER_ALIASES)}. A new family is a row in hf_distill.teachers.TEACHER_FAMILIES."
        )
    return TEACHER_FAMILIES[key]


def teacher_needs_depth(name: str) -> bool:
    """Whether the teacher ``name`` reads the exact depth of its views (an ``oracle...`` spec); decided from the
    name alone, so the data path can prepare depth before any model loads."""
    family = TEACHER_FAMILIES.get(name.partition(":")[0])
    return family is not None and family.needs_depth


def build_teacher(name_or_path: str, checkpoint: str | None = None, *, base_model: str | None = None) -> Teacher:
    """The teacher named by ``--teacher_models`` (with its ``--teacher_checkpoints`` entry, if any), frozen.
    ``base_model`` (``--teacher_base_model``) replaces the Stable Diffusion 2.1 base of GenPercept teachers.

    Refuses families whose output space has no fixed conversion to disparity, saying why.
    """
    family = teacher_family(name_or_path)
    if family.teacher_class is None or family.predicts not in ENTERS_AS:
        raise ValueError(f"Teacher '{name_or_path}' ({family.name}) is refused: {REFUSAL_REASON}")
    extra = {"base_model": base_model} if base_model and family.teacher_class is GenPerceptTeacher else {}
    teacher = family.teacher_class.load(name_or_path, checkpoint, family, **extra)
    return teacher.eval().requires_grad_(False)
