"""A preflight before a long run (``scripts/distill.py ... --preflight``): every problem of a recipe reported at once,
then one real training step and one evaluation batch, like Lightning's ``fast_dev_run``.

The recipe is resolved exactly as training resolves it (the same three argument dataclasses). Each check is one small
function in ``PREFLIGHT_CHECKS`` that returns ``CheckResult`` rows (check | result | fix); a check that raises is a
failed row naming the error, so one broken part never hides the others. When every check passes, the real models
train one step and evaluate one batch in a temporary output folder (nothing of the real run is written).

    report = run_preflight(model_args, data_args, training_args)
    print(report.format())
    sys.exit(0 if report.passed else 1)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hf_distill.data import ViewSampler
from hf_distill.data.views import open_image, undecoded_images
from hf_distill.hub import display_name, known_license
from hf_distill.models import load_depth_config, normalize_views, resolve_model_name
from hf_distill.repositories import REPOSITORIES, repository, resolve_repository
from hf_distill.teachers import TEACHER_CONFIG_NAME, GenPerceptTeacher, TeacherFamily, flatness_problem, teacher_family
from hf_distill.training.arguments import DataArguments, DistillationArguments, ModelArguments
from hf_distill.data.images import displayed_size
from hf_distill.training.data import build_eval_dataset, build_training_source, resolve_eval_data
from hf_distill.training.preflight_host import download_hint, evaluation_rows, photograph_rows
from hf_distill.training.run import build_trainer, resolve_teacher_dtype
from hf_distill.training.trainer import running_dtype

PASS, WARN, FAIL = "ok", "WARN", "FAIL"
GIB = 1024**3
SAMPLE_EXAMPLES = 16  # training examples read by the data check
# Transient activations of one teacher forward on one image, as a fraction of the model's float32 weight bytes at a
# reference input side, measured by benchmarks/bench_teachers.py (CPU float32, batch 1): Depth Anything V2 Large adds
# 0.66 GiB at 560 x 560 for 1.25 GiB of weights, GenPercept 2.32 GiB at 768 x 768 for 3.54 GiB. Scaled linearly with
# the input pixels and the dtype's size; other families use Depth Anything's ratio.
ACTIVATION_RATIO = {"depth": (0.53, 560), "genpercept": (0.66, 768)}
# Student training memory per parameter: float32 weights, gradients and AdamW's two moments.
TRAIN_BYTES_PER_PARAM = 16
# A training forward keeps its activations for the backward: about this many times a no-grad forward's transient
# (activation checkpointing keeps about a quarter of that).
TRAIN_ACTIVATION_FACTOR = 3.0
MEMORY_MARGIN = 1.2  # CUDA context, allocator fragmentation, DataLoader buffers


@dataclass
class CheckResult:
    """One row of the report: which check, its status (``PASS``/``WARN``/``FAIL``), what it found, how to fix it."""

    check: str
    status: str
    result: str
    fix: str = ""


@dataclass
class PreflightContext:
    """The resolved recipe, shared by the checks (they may leave what they computed in ``facts``)."""

    model_args: ModelArguments
    data_args: DataArguments
    args: DistillationArguments
    facts: dict = field(default_factory=dict)


@dataclass
class PreflightReport:
    rows: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(row.status != FAIL for row in self.rows)

    def format(self) -> str:
        """The report as a fixed-width table (check | result | fix) and a last line saying what to do."""
        widths = [max(len(h), *(len(getattr(r, a)) for r in self.rows)) for h, a in
                  (("check", "check"), ("status", "status"))]
        lines = [f"{'check':<{widths[0]}}  {'status':<{widths[1]}}  result | fix"]
        for row in self.rows:
            fix = f" | fix: {row.fix}" if row.fix else ""
            lines.append(f"{row.check:<{widths[0]}}  {row.status:<{widths[1]}}  {row.result}{fix}")
        failures = sum(row.status == FAIL for row in self.rows)
        lines.append(f"preflight: {'passed' if self.passed else f'{failures} check(s) failed'}")
        return "\n".join(lines)


Check = Callable[[PreflightContext], Iterable[CheckResult]]


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def _param_count(module_class, config) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = module_class(config) if not hasattr(module_class, "from_config") else module_class.from_config(config)
    return sum(p.numel() for p in model.parameters())


# ---- models --------------------------------------------------------------------------------------------------


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
        settings = json.loads((Path(name) / TEACHER_CONFIG_NAME).read_text())
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

    from hf_distill.models import load_model_config

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
            yield CheckResult(check, FAIL, _first_line(error), _offline_fix(name))
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
        yield CheckResult(check, FAIL, _first_line(error), _offline_fix(name))
        return
    ctx.facts["student"] = (config, params)
    licence = _licence_text(name) if ctx.model_args.student_init != "random" else "no initial weights"
    yield CheckResult(check, PASS, f"{where} (init {ctx.model_args.student_init}); {params / 1e6:.1f}M parameters; "
                      f"{licence}")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _offline_fix(name: str) -> str:
    hint = download_hint(name, GenPerceptTeacher.HUB_UNETS, REPOSITORIES, GenPerceptTeacher.HUB_BASE,
                         resolve_model_name(name))
    return f"check the name; offline (HF_HUB_OFFLINE=1) download it once ({hint}) or pass a local folder"


# ---- data ----------------------------------------------------------------------------------------------------


def check_training_data(ctx: PreflightContext) -> Iterable[CheckResult]:
    """The training source opens and a sample of its examples decodes (count, sizes, broken files)."""
    data_args, args = ctx.data_args, ctx.args
    try:
        source = undecoded_images(build_training_source(data_args, args))
    except Exception as error:  # noqa: BLE001
        yield CheckResult("training data", FAIL, _first_line(error), "fix --dataset_dir / --dataset_name")
        return
    count = len(source) if hasattr(source, "__len__") else None
    sizes, broken = [], []
    for index, example in enumerate(itertools.islice(iter(source), SAMPLE_EXAMPLES)):
        try:
            with open_image(example["image"]) as image:
                image.load()
                sizes.append(displayed_size(image))
        except Exception as error:  # noqa: BLE001
            field_ = example["image"]
            name = (field_.get("path") if isinstance(field_, dict) else None) or example.get("__key__") or index
            broken.append(f"cannot decode {name}: {_first_line(error)}")
    ctx.facts["image_sizes"] = sizes
    read = len(sizes) + len(broken)
    what = f"{count} examples" if count is not None else "streamed (length unknown)"
    if read == 0:
        yield CheckResult("training data", FAIL, f"{what}: no example could be read", "point it at images")
        return
    size_text = ""
    if sizes:
        shorts = [min(w, h) for w, h in sizes]
        size_text = f"; sizes {min(sizes)}..{max(sizes)} (short side {min(shorts)}..{max(shorts)})"
    text = f"{what}; read {read}: {len(broken)} broken{size_text}"
    if len(broken) == read:
        yield CheckResult("training data", FAIL, f"{text}; {broken[0]}", "every sampled image is unreadable")
    elif broken:
        yield CheckResult("training data", WARN, f"{text}; {broken[0]}",
                          "broken images are skipped and counted during training; remove them to train on all")
    else:
        yield CheckResult("training data", PASS, text)
    yield from photograph_rows(source, open_image, global_crop_size=data_args.global_crop_size,
                               examples=SAMPLE_EXAMPLES, row=CheckResult)


def check_views(ctx: PreflightContext) -> Iterable[CheckResult]:
    """The view settings fit the sampled images."""
    sizes = ctx.facts.get("image_sizes")
    if not sizes:
        yield CheckResult("views", WARN, "no image read: not checked", "see the training data row")
        return
    d = ctx.data_args
    shorts = [min(w, h) for w, h in sizes]
    problems = []
    try:
        sampler = ViewSampler(d.global_crop_size, d.local_crop_size, d.num_local_patches, d.min_region,
                              d.min_local_crop, seed=ctx.args.seed)
        for index, (width, height) in enumerate(sizes):
            sampler.sample_geometry(width, height, epoch=0, index=index)
    except Exception as error:  # noqa: BLE001
        yield CheckResult("views", FAIL, _first_line(error), "fix the view flags (--global_crop_size, ...)")
        return
    if d.min_region > max(shorts):
        problems.append((f"--min_region {d.min_region} is larger than every sampled image (short side at most "
                         f"{max(shorts)}): every region is the whole image",
                         f"lower --min_region to at most {min(shorts)} to draw regions of varied scale"))
    if d.min_local_crop is not None and d.min_local_crop >= min(shorts):
        problems.append((f"--min_local_crop {d.min_local_crop} >= the smallest short side {min(shorts)}: patches "
                         "cannot zoom in there", f"lower --min_local_crop below {min(shorts) // 2}"))
    if d.global_crop_size > max(shorts):
        problems.append((f"--global_crop_size {d.global_crop_size} upsamples every sampled image (short side at most "
                         f"{max(shorts)})", "use larger images or a smaller --global_crop_size"))
    if not problems:
        yield CheckResult("views", PASS, f"global {d.global_crop_size}, {d.num_local_patches} patches of "
                          f"{d.local_crop_size}, regions >= min({d.min_region}, short side) fit the "
                          f"{len(sizes)} sampled images")
    for result, fix in problems:
        yield CheckResult("views", WARN, result, fix)


# ---- resources -----------------------------------------------------------------------------------------------


def free_memory(args: DistillationArguments) -> tuple[int, str]:
    """(bytes free, where) of the device a rank trains on: CUDA ``mem_get_info``, else available RAM."""
    if torch.cuda.is_available() and not args.use_cpu:
        device = torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"cuda:{device} free"
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024, "available RAM"


def estimate_memory(ctx: PreflightContext) -> dict[str, int]:
    """Per-device bytes: teachers' weights, the largest teacher step's activations, the student's training memory."""
    d, args = ctx.data_args, ctx.args
    dtype_bytes = torch.finfo(resolve_teacher_dtype(ctx.model_args.teacher_dtype)).bits // 8
    images = args.per_device_train_batch_size * (1 + d.num_local_patches)  # the global view and patches together
    weights, activations = 0, 0
    for name, family, params in ctx.facts.get("teachers", []):
        weights += params * dtype_bytes
        genpercept = family.teacher_class is GenPerceptTeacher
        ratio, side = ACTIVATION_RATIO["genpercept" if genpercept else "depth"]
        input_side = GenPerceptTeacher.DEFAULT_RESOLUTION if genpercept else max(d.global_crop_size,
                                                                                   d.local_crop_size)
        per_image = ratio * params * dtype_bytes * (input_side / side) ** 2
        activations = max(activations, int(images * per_image))
    _, student_params = ctx.facts["student"]
    ratio, side = ACTIVATION_RATIO["depth"]
    factor = TRAIN_ACTIVATION_FACTOR / (4 if args.activation_checkpointing else 1)
    student_act = args.per_device_train_batch_size * factor * ratio * student_params * 4 * (
        d.global_crop_size / side) ** 2
    return {"teacher weights": weights, "teacher activations": activations,
            "student training": student_params * TRAIN_BYTES_PER_PARAM + int(student_act)}


def check_memory(ctx: PreflightContext) -> Iterable[CheckResult]:
    """Per-device estimate for the batch, precision and teachers against the device's free memory."""
    if "student" not in ctx.facts:
        yield CheckResult("memory", WARN, "not estimated (the student did not resolve)", "see the student row")
        return
    parts = estimate_memory(ctx)
    total = int(sum(parts.values()) * MEMORY_MARGIN)
    free, where = free_memory(ctx.args)
    ctx.facts["memory_estimate"] = total
    text = (f"estimate {_gib(total)} per device (" + ", ".join(f"{k} {_gib(v)}" for k, v in parts.items())
            + f", x{MEMORY_MARGIN} margin) vs {_gib(free)} {where}")
    if total > free:
        yield CheckResult("memory", FAIL, text, "lower --per_device_train_batch_size (raise "
                          "--gradient_accumulation_steps), --activation_checkpointing, --teacher_dtype bfloat16, or a "
                          "larger device")
    else:
        yield CheckResult("memory", PASS, text)


def checkpoint_bytes(student_params: int) -> int:
    """One checkpoint-*/: float32 student weights and AdamW's two moments (plus its flat student export)."""
    return student_params * (4 + 8) + student_params * 4


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(ctx: PreflightContext) -> Iterable[CheckResult]:
    """``output_dir`` is writable and holds ``--save_total_limit`` checkpoints plus the flat exports."""
    output = Path(ctx.args.output_dir)
    try:  # a probe file in the folder, or in the folder that will hold it (nothing of the run is created)
        parent = _existing_parent(output)
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".preflight-"):
            pass
    except OSError as error:
        yield CheckResult("disk", FAIL, f"{output} is not writable: {_first_line(error)}",
                          "choose another --output_dir or fix its permissions")
        return
    if "student" not in ctx.facts:
        yield CheckResult("disk", WARN, f"{output} writable; size not estimated", "see the student row")
        return
    _, params = ctx.facts["student"]
    args = ctx.args
    steps = args.max_steps if args.max_steps > 0 else None
    saves = None if steps is None or args.save_strategy == "no" else max(1, math.floor(steps / max(args.save_steps, 1)))
    kept = args.save_total_limit or saves or 1
    if saves is not None:
        kept = min(kept, saves)
    flat_exports = (saves or kept) * params * 4  # student_checkpoint_{step}.safetensors are never rotated
    need = kept * params * 12 + flat_exports + 3 * params * 4  # + the student folder, best and final exports
    free = shutil.disk_usage(_existing_parent(output)).free
    text = (f"{output} writable; {kept} checkpoint(s) of {_gib(params * 12)} (--save_total_limit "
            f"{args.save_total_limit}) + {saves or kept} flat exports + final files = {_gib(need)} vs {_gib(free)} free")
    if need > free:
        yield CheckResult("disk", FAIL, text, "free space, set --save_total_limit, or raise --save_steps")
    else:
        yield CheckResult("disk", PASS, text)


# ---- Hub and evaluation --------------------------------------------------------------------------------------


def _write_access(whoami: dict, namespace: str) -> bool:
    """Whether the token ``whoami`` describes may write repositories of ``namespace`` (its user or an org)."""
    token = (whoami.get("auth") or {}).get("accessToken") or {}
    names = {whoami.get("name")} | {org.get("name") for org in whoami.get("orgs") or []}
    role = token.get("role")
    if role == "write":
        return namespace in names
    if role == "fineGrained":
        for scope in (token.get("fineGrained") or {}).get("scoped") or []:
            if (scope.get("entity") or {}).get("name") == namespace and "repo.write" in scope.get("permissions", []):
                return True
    return False


def check_hub(ctx: PreflightContext) -> Iterable[CheckResult]:
    """With ``--push_to_hub``: a token, and write access to ``--hub_model_id``'s namespace."""
    args = ctx.args
    if not args.push_to_hub:
        return
    from huggingface_hub import HfApi, get_token

    token = args.hub_token or get_token()
    if token is None:
        yield CheckResult("hub", FAIL, "--push_to_hub without a Hugging Face token",
                          "run `hf auth login` (a token with write access) or set HF_TOKEN")
        return
    try:
        whoami = HfApi().whoami(token=token)
    except Exception as error:  # noqa: BLE001
        yield CheckResult("hub", FAIL, f"the token was refused: {_first_line(error)}",
                          "run `hf auth login` again; the Hub must be reachable (not HF_HUB_OFFLINE)")
        return
    repo_id = args.hub_model_id or f"{whoami['name']}/{Path(args.output_dir).resolve().name}"
    namespace = repo_id.split("/")[0] if "/" in repo_id else whoami["name"]
    if _write_access(whoami, namespace):
        yield CheckResult("hub", PASS, f"logged in as {whoami['name']}, write access to {repo_id}")
    else:
        yield CheckResult("hub", FAIL, f"logged in as {whoami['name']}: the token cannot write to {repo_id}",
                          f"use a token with write access to {namespace} (`hf auth login`), or a --hub_model_id in "
                          "your namespace")


def check_evaluation(ctx: PreflightContext) -> Iterable[CheckResult]:
    """With ``--eval_strategy``: the evaluation data exists and has depth."""
    args = ctx.args
    if args.eval_strategy == "no":
        return
    try:
        if resolve_eval_data(ctx.data_args, args) is None:
            raise ValueError("no evaluation data")
        samples = build_eval_dataset(ctx.data_args, args)
        rows = list(evaluation_rows(samples, CheckResult))  # depth in metres, 0 where the mask is off
    except Exception as error:  # noqa: BLE001
        yield CheckResult("evaluation", FAIL, _first_line(error),
                          "set --eval_dataset_name (+ --depth_column) or --eval_dataset_dir, or --eval_strategy no")
        return
    yield from rows


PREFLIGHT_CHECKS: list[Check] = [check_teachers, check_student, check_training_data, check_views, check_memory,
                                 check_disk, check_hub, check_evaluation]


# ---- one real step -------------------------------------------------------------------------------------------


def fast_dev_run(ctx: PreflightContext) -> Iterable[CheckResult]:
    """One real training step and one evaluation batch with the real models, in a temporary output folder."""
    args, data_args = ctx.args, ctx.data_args
    with tempfile.TemporaryDirectory(prefix="hf_distill-preflight-") as tmp:
        dev_args = dataclasses.replace(
            args, output_dir=tmp, max_steps=1, save_strategy="no", push_to_hub=False, report_to="none",
            eval_strategy="no", load_best_model_at_end=False, logging_steps=1, visualize_steps=0,
            resume_from_checkpoint=None, preflight=False,
        )
        dev_data = dataclasses.replace(data_args, max_eval_samples=args.per_device_eval_batch_size)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            trainer = build_trainer(ctx.model_args, dev_data, dev_args)
            loaded = time.perf_counter()
            trainer.train()
            trained = time.perf_counter()
        except Exception as error:  # noqa: BLE001
            yield CheckResult("one training step", FAIL, _first_line(error), "see the error; the checks above passed")
            return
        yield from _output_conditioning(trainer)
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        peak = (f"; peak CUDA memory {_gib(torch.cuda.max_memory_allocated())}"
                if torch.cuda.is_available() and not args.use_cpu else "")
        yield CheckResult("one training step", PASS if losses and math.isfinite(losses[-1]) else FAIL,
                          f"loss {f'{losses[-1]:.4g}' if losses else 'not logged'}; models loaded in {loaded - start:.1f} s, "
                          f"step {trained - loaded:.1f} s{peak}",
                          "" if losses and math.isfinite(losses[-1]) else "the loss is not finite: check the teachers")
        if trainer.eval_dataset is not None:
            try:
                metrics = trainer.evaluate()
            except Exception as error:  # noqa: BLE001
                yield CheckResult("one evaluation batch", FAIL, _first_line(error), "see the error")
                return
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("eval_abs_rel", "eval_delta1"))
            yield CheckResult("one evaluation batch", PASS, f"{len(trainer.eval_dataset)} samples: {shown}")
        del trainer


@torch.no_grad()
def _output_conditioning(trainer) -> Iterable[CheckResult]:
    """Every teacher's and the student's raw output on a first training batch, in the dtype each runs in, checked for
    a signal too flat to represent (``hf_distill.teachers.flatness_problem``): bf16 turns such maps into constants."""
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    views = batch["global_view"]
    mixed = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else None
    student = trainer.accelerator.unwrap_model(trainer.model)
    with trainer.autocast_smart_context_manager():
        depths = (batch["view_depth"], None) if "view_depth" in batch else None  # for teachers that read it
        outputs = [(f"teacher {name}", trainer._run_teacher(index, views, None, False, depths)[0], teacher)
                   for index, (name, teacher) in enumerate(zip(trainer.teacher_names, trainer.teachers))]
        outputs.append(("student", student(normalize_views(views, trainer._student_norm))[0], student.student))
    for label, maps, module in outputs:
        dtype = mixed or running_dtype(module)
        problem = flatness_problem(maps, dtype)
        yield CheckResult(f"output of {label}", WARN if problem else PASS,
                          problem or f"raw output representable in {str(dtype).removeprefix('torch.')}",
                          "re-condition its head (scripts/make_demo_teacher.py --condition_only shows how) or run "
                          "it in float32" if problem else "")


def run_preflight(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: DistillationArguments,
    *,
    checks: list[Check] | None = None,
    dev_run: bool = True,
    host_rows: Iterable[CheckResult] = (),
) -> PreflightReport:
    """Run every check (``PREFLIGHT_CHECKS`` by default), then, when none failed and ``dev_run``, one real training
    step and one evaluation batch; ``host_rows`` (``preflight_host.parse_for_preflight``) open the report. Nothing is
    written to ``args.output_dir`` (or its nearest existing parent) but a
    probe file, removed at once."""
    ctx = PreflightContext(model_args, data_args, args)
    rows: list[CheckResult] = list(host_rows)  # what parsing found about this host (preflight_host)
    for check in checks if checks is not None else PREFLIGHT_CHECKS:
        try:
            rows += list(check(ctx))
        except Exception as error:  # noqa: BLE001  (a broken check is a failed row, never a hidden one)
            rows.append(CheckResult(check.__name__.removeprefix("check_"), FAIL, _first_line(error), "see the error"))
    if dev_run:
        if all(row.status != FAIL for row in rows):
            rows += list(fast_dev_run(ctx))
        else:
            rows.append(CheckResult("one training step", WARN, "not run: fix the failures above first"))
    return PreflightReport(rows)
