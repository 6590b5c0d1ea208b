"""The GenPercept teacher: a Stable Diffusion 2.1 UNet fine-tuned for one-step disparity (needs ``diffusers``)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_distill.models import ModelNotFoundError
from hf_distill.repositories import REPOSITORIES, RepositoryNotFoundError, resolve_repository
from hf_distill.teachers.base import Teacher, TeacherFamily, nearest_multiple, resize_bilinear

# A local GenPercept folder names its family (and optionally its processing resolution) in this file.
TEACHER_CONFIG_NAME = "teacher_config.json"


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
        self.check_tokens(want_tokens)
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
            from hf_distill.teachers.families import read_teacher_config  # the family table imports this module

            settings = read_teacher_config(Path(name))
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
