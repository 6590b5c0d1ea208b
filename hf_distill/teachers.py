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

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForDepthEstimation, PretrainedConfig, PreTrainedModel

from hf_distill.models import (
    ModelNotFoundError,
    build_depth_model,
    image_mean_std,
    load_model_config,
    mean_std_tensors,
    normalize_views,
    resolve_model_name,
)
from hf_distill.oracle import ORACLE, OracleSpec, degrade, parse_oracle_spec
from hf_distill.repositories import REPOSITORIES, RepositoryNotFoundError, resolve_repository
from hf_distill.token_tap import EncoderTokenTap

# A local GenPercept folder names its family (and optionally its processing resolution) in this file.
TEACHER_CONFIG_NAME = "teacher_config.json"


class OutputSpace(enum.Enum):
    """What a family's network predicts, and therefore how it enters the (scale/shift-normalised) losses."""

    DISPARITY = "relative disparity"
    MINMAX_DISPARITY = "min-max normalised disparity in [0, 1]"
    INVERSE_DEPTH = "inverse depth (up to the image's focal scale)"
    METRIC_DEPTH = "metric depth (no shift)"
    AFFINE_DEPTH = "affine-invariant depth (unknown shift)"


# How each output space becomes the disparity the losses expect; a space missing here is refused.
ENTERS_AS = {
    OutputSpace.DISPARITY: "itself",
    OutputSpace.MINMAX_DISPARITY: "itself",
    OutputSpace.INVERSE_DEPTH: "itself",
    OutputSpace.METRIC_DEPTH: "1 / depth on valid pixels (0 elsewhere)",
}

REFUSAL_REASON = (
    "it predicts affine-invariant depth, whose shift is unknown, so 1 / depth is not a disparity up to scale and "
    "no fixed conversion turns it into one. Use a disparity or metric-depth teacher (e.g. genpercept-disparity "
    "instead of genpercept-depth)."
)


def to_disparity(prediction: Tensor, space: OutputSpace) -> Tensor:
    """A teacher network's raw prediction (N, H, W) in ``space`` -> relative disparity (N, H, W), float32.

    Metric depth becomes ``1 / depth`` where the depth is finite and positive and 0 (infinitely far) elsewhere.
    """
    prediction = prediction.float()
    if space in (OutputSpace.DISPARITY, OutputSpace.MINMAX_DISPARITY, OutputSpace.INVERSE_DEPTH):
        return prediction
    if space is OutputSpace.METRIC_DEPTH:
        valid = torch.isfinite(prediction) & (prediction > 0)
        return torch.where(valid, 1.0 / torch.where(valid, prediction, 1.0), 0.0)
    raise ValueError(f"a teacher predicting {space.value} cannot be used: {REFUSAL_REASON}")


# A depth map's mean absolute deviation (MAD) must span at least this many units of the running dtype's relative
# precision at its median level: below it, rounding noise is a sizeable part of the signal (about 7% of the MAD at
# the limit) and below one unit every map is one constant. bfloat16 (eps 2^-7): MAD/median >= 0.031.
MIN_SPREAD_EPS = 4


def output_spread(depth: Tensor) -> Tensor:
    """The median over maps of MAD / |median| of raw depth maps ``depth`` (N, H, W) or (H, W): a 0-dim float64 tensor
    on their device (nothing is read back to the host). A constant map counts as 0."""
    if depth.dim() == 2:
        depth = depth[None]
    if depth.dim() != 3 or depth.numel() == 0:
        raise ValueError(f"depth must be (N, H, W) or (H, W) with pixels, got {tuple(depth.shape)}")
    maps = depth.detach().double().flatten(1)
    median = maps.median(dim=1).values
    deviation = (maps - median[:, None]).abs().mean(dim=1)
    return torch.where(deviation > 0, deviation / median.abs(), torch.zeros_like(deviation)).median()


def spread_problem(spread: float, dtype: torch.dtype) -> str | None:
    """Why maps of relative spread ``spread`` (``output_spread``) are too flat for ``dtype``, or None when they are
    not: the spread must reach ``MIN_SPREAD_EPS`` units of ``torch.finfo(dtype).eps``."""
    eps = torch.finfo(dtype).eps
    if spread >= MIN_SPREAD_EPS * eps:
        return None
    dtype_name = str(dtype).removeprefix("torch.")
    return (
        f"raw output too flat for {dtype_name}: its mean absolute deviation is {spread:.2g} of its median level, "
        f"{spread / eps:.2g} units of {dtype_name}'s precision {eps:.2g} (needs {MIN_SPREAD_EPS}); in {dtype_name} "
        f"its maps are nearly one constant. Re-condition its head (hf_distill.models.reaffine_head) or run it in "
        f"float32."
    )


def flatness_problem(depth: Tensor, dtype: torch.dtype) -> str | None:
    """Why raw depth maps are too flat to be represented in ``dtype``, or None when they are not.

    Args:
        depth: (N, H, W) or (H, W) raw model outputs (a teacher's disparity or a student's prediction), any float
            dtype; a first batch is enough.
        dtype: the floating dtype the model will run in (``torch.bfloat16`` under ``--bf16`` autocast or
            ``--teacher_dtype bfloat16``, ``torch.float16``, ``torch.float32``).
    Returns:
        A one-line explanation when ``output_spread(depth)`` is below ``MIN_SPREAD_EPS`` units of
        ``torch.finfo(dtype).eps``, else None. Reads one number back to the host: call it once (first batch or
        load), not every step.
    """
    return spread_problem(float(output_spread(depth)), dtype)


def resize_bilinear(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) or (N, H, W) -> the same at ``size`` (bilinear, antialiased when shrinking); unchanged when the
    size already matches."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if images.dim() == 3:
        return resize_bilinear(images[:, None], size)[:, 0]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def nearest_multiple(side: float, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``side`` (at least ``multiple``)."""
    return max(multiple, round(side / multiple) * multiple)


class Teacher(nn.Module):
    """A frozen depth teacher (see the module docstring). Subclasses set ``token_width`` when they give tokens.

    Args:
        family: the family's row in ``TEACHER_FAMILIES``.
    """

    token_width: int | None = None
    needs_depth = False  # True: forward() takes ``depth``, the exact depth of the views (OracleTeacher)

    def __init__(self, family: TeacherFamily) -> None:
        super().__init__()
        self.family = family

    def forward(self, views: Tensor, want_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        """Args: views (N, 3, H, W) RGB in [0, 1]. Returns the relative disparity (N, H, W) float32 and, when
        ``want_tokens``, the final encoder tokens (N, T, token_width) in the network's dtype (else None)."""
        raise NotImplementedError

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily) -> Teacher:
        """Build the teacher named ``name`` (alias, Hub id or local folder), with weights from ``checkpoint`` where
        the family takes a separate weights file."""
        raise NotImplementedError

    def _check_no_tokens(self, want_tokens: bool) -> None:
        if want_tokens and self.token_width is None:
            raise ValueError(f"a {self.family.name} teacher has no encoder tokens for the feature term")


class TransformersDepthTeacher(Teacher):
    """Any ``AutoModelForDepthEstimation`` whose family is declared: views are resized to the sizes the network
    accepts (``TeacherFamily.input_size``), normalised with the model's own mean/std, and the prediction is brought
    back to the views' size and converted to disparity. Depth Anything models also give encoder tokens.

    Args:
        model: the depth model (``predicted_depth`` (N, h, w)).
        family: its row in ``TEACHER_FAMILIES``.
        mean_std: the model's input normalisation (mean, std), three values each.
    """

    def __init__(self, model: PreTrainedModel, family: TeacherFamily, mean_std: tuple[list[float], list[float]]):
        super().__init__(family)
        self.model = model
        self._token_tap = None
        if family.model_type == "depth_anything":
            # DINOv2 attention through torch's fused kernels (flash / memory-efficient); only the backbone attends.
            model.set_attn_implementation({"backbone_config": "sdpa"})
        if family.tokens:
            self.token_width = model.config.backbone_config.hidden_size
            # Attached for the model's lifetime, before any torch.compile (see EncoderTokenTap).
            self._token_tap = EncoderTokenTap(model)
        # Plain attributes, not buffers: they stay float32 when the teacher is cast to bf16.
        self._mean_std = mean_std_tensors(*mean_std)

    def forward(self, views: Tensor, want_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        self._check_no_tokens(want_tokens)
        height, width = views.shape[-2:]
        dtype = next(self.model.parameters()).dtype
        pixels = normalize_views(resize_bilinear(views, self.family.input_size(self.model.config, height, width)),
                                 self._mean_std).to(dtype)
        prediction = self.model(pixel_values=pixels).predicted_depth
        tokens = self._token_tap.pop() if self._token_tap is not None else None  # popped: no activations kept
        tokens = tokens if want_tokens else None  # cast by the caller, after keeping the tokens it needs
        return resize_bilinear(to_disparity(prediction, self.family.predicts), (height, width)), tokens

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily) -> TransformersDepthTeacher:
        if family.model_type == "depth_anything":
            model = build_depth_model(name, checkpoint)  # aliases, folders, Hub ids, original checkpoints
        elif checkpoint is not None:
            raise ValueError(f"--teacher_checkpoints {checkpoint}: only Depth Anything structures take a separate "
                             f"weights file; pass the {family.name} model as a folder or Hub id in --teacher_models.")
        else:
            try:
                model = AutoModelForDepthEstimation.from_pretrained(resolve_model_name(name))
            except OSError as error:
                if Path(name).is_dir():
                    raise
                raise ModelNotFoundError(f"Cannot load teacher '{name}' from the Hugging Face Hub: {error}") from error
        return cls(model, family, image_mean_std(name))


class GenPerceptTeacher(Teacher):
    """GenPercept (Xu et al., arXiv 2403.06090): a Stable Diffusion 2.1 UNet fine-tuned for one-step perception.

    The published one-step recipe: views are resized so that the longest edge is ``processing_resolution`` (sides
    rounded to what VAE and UNet accept) and mapped to [-1, 1]; the image latent is the VAE posterior mean times
    ``LATENT_SCALE``; the UNet sees that latent alone at timestep 1 with the empty prompt's embedding, and the
    prediction is ``-unet_out`` (their one-step DDIM with beta 1 and v-prediction); the VAE decodes it, the three
    channels are averaged, clipped to [-1, 1] and mapped to [0, 1], then resized back to the view: a min-max
    disparity (larger = closer). The empty prompt is encoded once at construction; the text encoder is not kept.

    At the paper's sizes (24 views of 768 x 768 per step) the VAE runs on chunks of views (``vae_chunk``) so that
    no activation reaches 2^31 elements (where CUDA kernels' 32-bit indexing ends), and the decoder's output
    layers (group norm, SiLU, last convolution) and the channel mean run in float32 outside autocast: a bf16
    output would round the map to steps of 2^-9 (about 0.002 of disparity), a staircase the gradient term learns.

    Args:
        unet: ``diffusers.UNet2DConditionModel`` (4 latent channels in and out).
        vae: ``diffusers.AutoencoderKL``.
        text_encoder: ``transformers.CLIPTextModel``; tokenizer: its tokenizer.
        family: its row in ``TEACHER_FAMILIES``.
        processing_resolution: longest edge the network works at (GenPercept: 768); 0 keeps the views' size.
        vae_chunk_size: views per VAE encode/decode call; None: the most the 2^31-element bound allows
            (``vae_chunk``), 1 also when the VAE has slicing enabled (``vae.enable_slicing()``).
    """

    LATENT_SCALE = 0.18215
    TIMESTEP = 1
    # Our names in hf_distill.repositories.REPOSITORIES: the UNets per family alias, and the base that gives the
    # VAE, text encoder, tokenizer and the UNet's structure (its sources tried in order: the maintained copy first).
    HUB_UNETS = {"genpercept-disparity": "genpercept-disparity"}
    HUB_BASE = "stable-diffusion-2-1"
    DEFAULT_RESOLUTION = 768
    MAX_ACTIVATION_ELEMENTS = 2**31 - 1  # per tensor of one VAE call

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer, family: TeacherFamily,
                 processing_resolution: int = DEFAULT_RESOLUTION, vae_chunk_size: int | None = None) -> None:
        super().__init__(family)
        if processing_resolution < 0:
            raise ValueError(f"processing_resolution must be >= 0, got {processing_resolution}")
        if vae_chunk_size is not None and vae_chunk_size < 1:
            raise ValueError(f"vae_chunk_size must be >= 1 (or None), got {vae_chunk_size}")
        self.unet, self.vae = unet, vae
        self.processing_resolution = processing_resolution
        self.vae_chunk_size = vae_chunk_size
        if not isinstance(vae.decoder.conv_norm_out, nn.GroupNorm):
            raise ValueError("a GenPercept teacher needs an AutoencoderKL whose decoder ends in a GroupNorm, got "
                             f"{type(vae.decoder.conv_norm_out).__name__}")
        # Sides must survive the VAE's and the UNet's downsamplings without rounding.
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.size_multiple = vae_factor * 2 ** (len(unet.config.down_block_types) - 1)
        input_ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
        with torch.no_grad():
            embedding = text_encoder(input_ids.to(text_encoder.device))[0]
        self.register_buffer("prompt_embedding", embedding.detach().float(), persistent=False)  # (1, T, D)

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """The size views of ``height`` x ``width`` are processed at."""
        scale = self.processing_resolution / max(height, width) if self.processing_resolution else 1.0
        return nearest_multiple(height * scale, self.size_multiple), nearest_multiple(width * scale, self.size_multiple)

    def vae_chunk(self, height: int, width: int) -> int:
        """Views per VAE call at processing size ``height`` x ``width``: the most for which a tensor of the VAE's
        widest channel count at full resolution (an upper bound of every activation) stays within
        ``MAX_ACTIVATION_ELEMENTS``. SD 2.1's VAE (512 channels) at 768 x 768: 7."""
        if self.vae_chunk_size is not None:
            return self.vae_chunk_size
        if getattr(self.vae, "use_slicing", False):
            return 1
        return max(1, self.MAX_ACTIVATION_ELEMENTS // (max(self.vae.config.block_out_channels) * height * width))

    def forward(self, views: Tensor, want_tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        self._check_no_tokens(want_tokens)
        height, width = views.shape[-2:]
        dtype = next(self.unet.parameters()).dtype
        size = self.processing_size(height, width)
        chunks = -(-views.shape[0] // self.vae_chunk(*size))  # equal chunks of at most vae_chunk views
        pixels = (resize_bilinear(views, size) * 2.0 - 1.0).to(dtype)
        latent = torch.cat([self.vae.encode(part).latent_dist.mean for part in pixels.tensor_split(chunks)])
        latent = latent * self.LATENT_SCALE
        prompt = self.prompt_embedding.to(dtype).expand(latent.shape[0], -1, -1)
        prediction = -self.unet(latent, self.TIMESTEP, encoder_hidden_states=prompt).sample
        prediction = prediction / self.LATENT_SCALE
        decoded = torch.cat([self.decode(part).mean(dim=1) for part in prediction.tensor_split(chunks)])
        disparity = (decoded.clamp(-1.0, 1.0) + 1.0) / 2.0
        return resize_bilinear(disparity, (height, width)), None

    def decode(self, latent: Tensor) -> Tensor:
        """``AutoencoderKL.decode`` of (n, 4, h, w) latents (unscaled) -> (n, 3, H, W) float32. The output layers
        run on float32 copies of their weights with autocast off, so that the image is not rounded to the
        network's dtype (the layers before them keep it: their activations hold most of the memory)."""
        vae, decoder = self.vae, self.vae.decoder
        sample = vae.post_quant_conv(latent) if vae.post_quant_conv is not None else latent
        sample = decoder.conv_in(sample)
        sample = decoder.mid_block(sample, None)
        for up_block in decoder.up_blocks:
            sample = up_block(sample, None)
        norm, conv = decoder.conv_norm_out, decoder.conv_out
        device = sample.device.type
        with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
            sample = F.group_norm(sample.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps)
            return conv._conv_forward(decoder.conv_act(sample), conv.weight.float(), conv.bias.float())

    @classmethod
    def load(cls, name: str, checkpoint: str | None, family: TeacherFamily,
             base_model: str | None = None) -> GenPerceptTeacher:
        """``name``: an alias of ``HUB_UNETS`` (UNet weights from the GenPercept repo, the rest from the first
        reachable source of ``HUB_BASE``) or a local folder holding ``unet/ vae/ text_encoder/ tokenizer/`` and
        ``teacher_config.json`` (or ``unet/`` alone and a ``"base_model"`` there). ``base_model`` (a local folder or
        Hub id, ``--teacher_base_model``) replaces the base."""
        try:
            from diffusers import AutoencoderKL, UNet2DConditionModel
        except ImportError as error:
            raise ImportError(f"The {name} teacher needs diffusers: pip install 'hf_distill[diffusers]'.") from error
        from accelerate import init_empty_weights
        from transformers import CLIPTextModel, CLIPTokenizer

        if checkpoint is not None:
            raise ValueError(f"--teacher_checkpoints {checkpoint}: a GenPercept teacher takes its weights from its "
                             "folder; pass the folder in --teacher_models.")
        if name in cls.HUB_UNETS:
            unets = REPOSITORIES[cls.HUB_UNETS[name]]
            unet_repo, unet_folder = unets.hub_id, unets.subfolder
            resolution = cls.DEFAULT_RESOLUTION
        else:
            settings = _read_teacher_config(Path(name))
            unet_repo, unet_folder = name, "unet"
            base_model = base_model or settings.get("base_model") or name
            resolution = settings.get("processing_resolution", cls.DEFAULT_RESOLUTION)
        try:
            base = resolve_repository(cls.HUB_BASE, probe="unet/config.json", override=base_model)
        except RepositoryNotFoundError as error:
            raise ModelNotFoundError(f"Cannot load teacher '{name}' (UNet {unet_repo}/{unet_folder}; VAE, text "
                                     f"encoder and tokenizer of its Stable Diffusion 2.1 base): {error}") from error
        try:
            # The fine-tuned weights fill SD 2.1's UNet structure, as GenPercept's own loader does.
            with init_empty_weights():
                unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base, subfolder="unet"))
            unet.load_state_dict(_load_unet_weights(unet_repo, unet_folder), strict=True, assign=True)
            vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
            text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
            tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")  # no AutoConfig look-up offline
        except OSError as error:
            if Path(name).is_dir():
                raise
            raise ModelNotFoundError(
                f"Cannot load teacher '{name}' (UNet {unet_repo}/{unet_folder}; VAE, text encoder and tokenizer of "
                f"{base}) from the Hugging Face Hub: {str(error).strip().splitlines()[0]}. Offline, pass a local "
                f"folder holding unet/ vae/ text_encoder/ tokenizer/ and a {TEACHER_CONFIG_NAME} naming its family."
            ) from error
        # One dtype for all parts whatever the files store; the trainer then casts to --teacher_dtype.
        return cls(unet, vae, text_encoder, tokenizer, family, processing_resolution=resolution).to(torch.float32)


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
        self._check_no_tokens(want_tokens)
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


def _load_unet_weights(repo_or_folder: str, subfolder: str) -> dict[str, Tensor]:
    """The UNet state dict from ``subfolder`` of a local folder or Hub repo (safetensors, else a .bin)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from safetensors.torch import load_file

    for filename in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if Path(repo_or_folder).is_dir():
            path = Path(repo_or_folder) / subfolder / filename
            if not path.is_file():
                continue
        else:
            try:
                path = hf_hub_download(repo_or_folder, filename, subfolder=subfolder)
            except EntryNotFoundError as error:
                if isinstance(error, LocalEntryNotFoundError):  # offline and not cached: not a missing file
                    raise
                continue
        if filename.endswith(".safetensors"):
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{repo_or_folder}/{subfolder}: no diffusion_pytorch_model.safetensors or .bin")


@dataclass(frozen=True)
class TeacherFamily:
    """One row of ``TEACHER_FAMILIES``.

    name: display name; predicts: the network's output space; teacher_class: the ``Teacher`` that runs it (None:
    refused); model_type: the transformers ``model_type`` of transformers families; tokens: gives final encoder
    tokens (Depth Anything); input_multiple: network input sides are rounded to this; input_side: a fixed square
    input side computed from the config (overrides input_multiple).
    """

    name: str
    predicts: OutputSpace
    teacher_class: type[Teacher] | None
    model_type: str | None = None
    tokens: bool = False
    input_multiple: int = 1
    input_side: Callable[[PretrainedConfig], int] | None = None
    needs_depth: bool = False

    def input_size(self, config: PretrainedConfig, height: int, width: int) -> tuple[int, int]:
        """The network input size for views of ``height`` x ``width``."""
        if self.input_side is not None:
            side = self.input_side(config)
            return side, side
        return nearest_multiple(height, self.input_multiple), nearest_multiple(width, self.input_multiple)


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


def _read_teacher_config(folder: Path) -> dict:
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
        return TEACHER_FAMILIES[_read_teacher_config(folder)["family"]]
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
