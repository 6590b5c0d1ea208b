"""Frozen teachers: one interface over depth-model families, each with its declared output space.

A teacher turns a batch of [0, 1] RGB views (N, 3, H, W) into a relative disparity map (N, H, W), larger = closer,
at the views' own resolution. It applies its own preprocessing (resizing to the sizes its network accepts, its
mean/std or [-1, 1] range) and converts its network's output space into disparity as declared in
``TEACHER_FAMILIES``; nothing is inferred from the values. Teachers that can also give final encoder tokens for the
feature term say so with ``token_width``; the trainer skips the feature term on steps drawn for the others.

    teacher = build_teacher("depthanything-large")       # any AutoModelForDepthEstimation with a declared family
    teacher = build_teacher("genpercept-disparity")      # GenPercept, one-step diffusion (needs `diffusers`)
    disparity, tokens = teacher(views, want_tokens=teacher.token_width is not None)

A new family is one ``Teacher`` subclass (or a row reusing one) and one ``TEACHER_FAMILIES`` entry.
``flatness_problem(depth, dtype)`` says when a model's raw maps are too flat to survive the dtype it runs in.
"""

from hf_distill.teachers.base import Teacher, TeacherFamily, nearest_multiple, resize_bilinear
from hf_distill.teachers.families import (
    FOLDER_FAMILIES,
    TEACHER_ALIASES,
    TEACHER_FAMILIES,
    build_teacher,
    read_teacher_config,
    teacher_family,
    teacher_needs_depth,
)
from hf_distill.teachers.flatness import MIN_SPREAD_EPS, flatness_problem, output_spread, running_dtype, spread_problem
from hf_distill.teachers.genpercept import TEACHER_CONFIG_NAME, GenPerceptTeacher
from hf_distill.teachers.oracle import OracleTeacher
from hf_distill.teachers.spaces import ENTERS_AS, REFUSAL_REASON, OutputSpace, to_disparity
from hf_distill.teachers.transformers_teacher import TransformersDepthTeacher

__all__ = [
    "ENTERS_AS", "FOLDER_FAMILIES", "MIN_SPREAD_EPS", "REFUSAL_REASON", "TEACHER_ALIASES", "TEACHER_CONFIG_NAME",
    "TEACHER_FAMILIES", "GenPerceptTeacher", "OracleTeacher", "OutputSpace", "Teacher", "TeacherFamily",
    "TransformersDepthTeacher", "build_teacher", "flatness_problem", "nearest_multiple", "output_spread",
    "read_teacher_config", "resize_bilinear", "running_dtype", "spread_problem", "teacher_family", "teacher_needs_depth",
    "to_disparity",
]
