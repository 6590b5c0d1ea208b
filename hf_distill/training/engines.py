"""What the distributed engines (DDP, DeepSpeed ZeRO-1/2/3, FSDP) need from the trainer: which ones run, ZeRO's
model-size-dependent settings, and the full (gathered) weights of a sharded module."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env

ZERO_SIZE_KEYS = ("reduce_bucket_size", "stage3_param_persistence_threshold", "stage3_prefetch_bucket_size")


def check_engine_supported(accelerator: Accelerator, args) -> None:
    """Refuse FSDP with a message that names the way out (DDP, or DeepSpeed ZeRO-3 to shard the student).

    FSDP is asked for by ``accelerate launch --use_fsdp`` (or an accelerate config with ``distributed_type: FSDP``),
    which reaches the process as ``ACCELERATE_USE_FSDP``, or by the Trainer's ``--fsdp``; on CPU accelerate may drop
    it silently and train plain DDP, so the request itself is refused, not only a running FSDP plugin."""
    requested = (accelerator.distributed_type == DistributedType.FSDP
                 or getattr(accelerator.state, "fsdp_plugin", None) is not None
                 or bool(getattr(args, "fsdp", None)) or parse_flag_from_env("ACCELERATE_USE_FSDP"))
    if requested:
        raise ValueError(
            "FSDP is not supported by hf_distill (launched with --use_fsdp, an accelerate config with "
            "distributed_type: FSDP, or --fsdp): the frozen teachers, the per-teacher projectors and the sharded "
            "checkpoints are only implemented and tested for DDP and DeepSpeed. To shard the student, launch with "
            "DeepSpeed ZeRO-3: accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml "
            "scripts/distill.py ..."
        )


def fill_zero_bucket_sizes(config: dict, hidden_size: int) -> dict:
    """Fill ZeRO's hidden-size-dependent settings (``auto`` or absent) with transformers' rule for ``hidden_size``.

    The Trainer takes them from ``model.config.hidden_size``, which neither the trainable module nor a Depth Anything
    config has; left absent, DeepSpeed's fixed defaults (parameters under 100k values never partitioned) would keep a
    small or mid-sized student whole on every rank under ZeRO-3. Modifies and returns ``config``.
    """
    zero = config.setdefault("zero_optimization", {})
    sizes = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_param_persistence_threshold": 10 * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
    }
    for key in ZERO_SIZE_KEYS if zero.get("stage") == 3 else ZERO_SIZE_KEYS[:1]:
        if zero.get(key, "auto") == "auto":
            zero[key] = sizes[key]
    return config


def is_zero3(accelerator: Accelerator) -> bool:
    """Whether parameters are partitioned across ranks (DeepSpeed ZeRO-3)."""
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and plugin.zero_stage == 3


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The unwrapped module's complete state dict (CPU tensors) on the main process, None on the others.

    Under ZeRO-3 every parameter is gathered, one module at a time, whatever
    ``stage3_gather_16bit_weights_on_model_save`` says (``engine._zero3_consolidated_16bit_state_dict``); it is a
    collective: call it on every rank.
    """
    if is_zero3(accelerator):
        engine = accelerator.deepspeed_engine_wrapped.engine if accelerator.deepspeed_engine_wrapped else None
        if engine is not None:
            state = engine._zero3_consolidated_16bit_state_dict()
            return {k: v.detach().cpu() for k, v in state.items()} if accelerator.is_main_process else None
    if not accelerator.is_main_process:
        return None
    return {k: v.detach().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}


@contextmanager
def whole_models():
    """Models built inside are whole on this rank, even under ZeRO-3: transformers would otherwise partition every
    model it constructs once a ZeRO-3 ``TrainingArguments`` exists (``deepspeed.zero.Init``, a collective), whatever
    ``zero3_init_flag`` says. Students and teachers are built whole on every rank (the shipped config's
    ``zero3_init_flag: false``) and partitioned by ``deepspeed.initialize``; a model built on one rank only (the
    demo's evaluation teacher) must be built here."""
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = reference() if reference is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


def deepspeed_teacher_config(training_config: dict, hidden_size: int) -> dict:
    """The DeepSpeed config of a frozen teacher's inference engine, from the student's (training) config.

    ZeRO-3 shards the teacher like the student, with the ``auto`` bucket sizes filled from the teacher's hidden size
    (as TRL's ``prepare_deepspeed``: the Trainer fills them from the student's config, which has no hidden size for
    Depth Anything); other stages replicate it (stage 0). No optimizer or scheduler.
    """
    config = copy.deepcopy(training_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") != 3:
        zero["stage"] = 0
        return config
    fill_zero_bucket_sizes(config, hidden_size)
    return config


def prepare_deepspeed_teacher(teacher: torch.nn.Module, accelerator) -> torch.nn.Module:
    """Wrap a frozen teacher in an inference DeepSpeed engine (ZeRO-3 shards it; other stages replicate it)."""
    import deepspeed

    # TRL's bucket sizes come from the model's hidden size: the token width, or for a teacher without tokens
    # (GenPercept) its widest linear layer.
    hidden_size = teacher.token_width or max(p.shape[-1] for p in teacher.parameters() if p.ndim == 2)
    config = deepspeed_teacher_config(accelerator.state.deepspeed_plugin.deepspeed_config, hidden_size)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine
