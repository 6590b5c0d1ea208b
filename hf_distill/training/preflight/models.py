"""Preflight checks of the models: every teacher and the student resolve, with family, size and licence."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hf_distill.hub import display_name, known_license
from hf_distill.models import load_depth_config, load_model_config, resolve_model_name
from hf_distill.repositories import REPOSITORIES, repository, resolve_repository
from hf_distill.teachers import GenPerceptTeacher, TeacherFamily, read_teacher_config, teacher_family
from hf_distill.training.preflight.host import download_hint
from hf_distill.training.preflight.report import FAIL, PASS, CheckResult, PreflightContext, error_summary


def _param_count(module_class, config) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = module_class(config) if not hasattr(module_class, "from_config") else module_class.from_config(config)
    return sum(p.numel() for p in model.parameters())



def _licence_text(name: str) -> str:
    licence = known_license(name)
    repo = repository(name) or repository(resolve_model_name(name))
    reason = f" ({repo.license_reason})" if repo is not None and repo.license == licence else ""
    return f"licence {licence or 'unknown (declare one with --license)'}{reason}"


def _resolve_depth_model(name: str) -> str:
    """Where a transformers model named ``name`` comes from (alias -> its sources, tried in order)."""
    resolved = resolve_model_name(name)
    if Path(resolved).is_dir():
        if not (Path(resolved) / "config.json").is_file():
            raise FileNotFoundError(f"{resolved}/config.json does not exist")
        return resolved
    alias = name if name in REPOSITORIES else None
    return resolve_repository(alias or resolved, probe="config.json")


def _genpercept_parts(ctx: PreflightContext, name: str) -> tuple[str, str, str]:
    """(UNet repository or folder, its subfolder, base) of a GenPercept teacher, each resolved."""
    base_override = ctx.model_args.teacher_base_model
    if name in GenPerceptTeacher.HUB_UNETS:
        unets = REPOSITORIES[GenPerceptTeacher.HUB_UNETS[name]]
        unet_repo, unet_folder = unets.hub_id, unets.subfolder
    else:
        settings = read_teacher_config(Path(name))
        unet_repo, unet_folder = name, "unet"
        base_override = base_override or settings.get("base_model") or name
    resolve_repository(unet_repo, probe=f"{unet_folder}/config.json")
    base = resolve_repository(GenPerceptTeacher.HUB_BASE, probe="unet/config.json", override=base_override)
    return unet_repo, unet_folder, base


def _teacher_params(ctx: PreflightContext, name: str, family: TeacherFamily) -> int:
    if family.teacher_class is GenPerceptTeacher:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        _, _, base = _genpercept_parts(ctx, name)
        return (_param_count(UNet2DConditionModel, UNet2DConditionModel.load_config(base, subfolder="unet"))
                + _param_count(AutoencoderKL, AutoencoderKL.load_config(base, subfolder="vae")))
    from transformers import AutoModelForDepthEstimation

    return _param_count(AutoModelForDepthEstimation, load_model_config(name))


def check_teachers(ctx: PreflightContext) -> Iterable[CheckResult]:
    """Every teacher resolves (each part of a GenPercept teacher), with its family and licence."""
    ctx.facts["teachers"] = []
    checkpoints = ctx.model_args.teacher_checkpoints or [None] * len(ctx.model_args.teacher_models)
    for name, checkpoint in zip(ctx.model_args.teacher_models, checkpoints):
        check = f"teacher {display_name(name)}"
        try:
            family = teacher_family(name)
            if family.teacher_class is None:
                yield CheckResult(check, FAIL, f"{family.name} is refused (affine-invariant depth)",
                                  "use a disparity or metric-depth teacher (e.g. genpercept-disparity)")
                continue
            if family.teacher_class is GenPerceptTeacher:
                unet_repo, unet_folder, base = _genpercept_parts(ctx, name)
                where = f"UNet {display_name(unet_repo)}/{unet_folder}, VAE/text encoder/tokenizer {display_name(base)}"
            elif checkpoint is not None:  # the alias names the structure only: no Hub access
                if not Path(checkpoint).is_file():
                    raise FileNotFoundError(f"--teacher_checkpoints {checkpoint} does not exist")
                where = f"structure of {display_name(name)}, weights {display_name(checkpoint)}"
            else:
                where = display_name(_resolve_depth_model(name))
            params = _teacher_params(ctx, name, family)
        except Exception as error:  # noqa: BLE001  (a report row, not a crash)
            yield CheckResult(check, FAIL, error_summary(error), offline_fix(name))
            continue
        ctx.facts["teachers"].append((name, family, params))
        yield CheckResult(check, PASS, f"{family.name}: {where}; {params / 1e6:.1f}M parameters; {_licence_text(name)}")


def check_student(ctx: PreflightContext) -> Iterable[CheckResult]:
    """The student's architecture (and, unless it starts from random weights, its weights' source)."""
    name = ctx.model_args.student_arch
    check = f"student {display_name(name)}"
    try:
        config = load_depth_config(name)
        where = ("architecture only" if ctx.model_args.student_init == "random"
                 else display_name(_resolve_depth_model(name)))
        from transformers import DepthAnythingForDepthEstimation

        params = _param_count(DepthAnythingForDepthEstimation, config)
    except Exception as error:  # noqa: BLE001
        yield CheckResult(check, FAIL, error_summary(error), offline_fix(name))
        return
    ctx.facts["student"] = (config, params)
    licence = _licence_text(name) if ctx.model_args.student_init != "random" else "no initial weights"
    yield CheckResult(check, PASS, f"{where} (init {ctx.model_args.student_init}); {params / 1e6:.1f}M parameters; "
                      f"{licence}")



def offline_fix(name: str) -> str:
    """The fix a model row names when `name` cannot be resolved: the repositories to download, or a local folder."""
    hint = download_hint(name, GenPerceptTeacher.HUB_UNETS, REPOSITORIES, GenPerceptTeacher.HUB_BASE,
                         resolve_model_name(name))
    return f"check the name; offline (HF_HUB_OFFLINE=1) download it once ({hint}) or pass a local folder"
