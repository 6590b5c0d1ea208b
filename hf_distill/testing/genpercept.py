"""GenPercept teacher folders with random weights, in the layout ``build_teacher`` loads (benchmarks, tests).

    write_genpercept_folder(folder, structure="sd21")   # Stable Diffusion 2.1's UNet (768-v), VAE and OpenCLIP-H
    write_genpercept_folder(folder, structure="tiny")   # the same block types at a few thousand parameters

The folder holds ``unet/ vae/ text_encoder/ tokenizer/`` and ``teacher_config.json`` (family
``genpercept-disparity``). The tokenizer knows CLIP's start and end tokens only: what the empty prompt needs.
Needs ``diffusers``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

STRUCTURES = ("sd21", "tiny")


def genpercept_modules(structure: str = "sd21") -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(unet, vae, text_encoder) of ``structure`` with random weights: ``sd21`` takes the config.json values of
    stabilityai/stable-diffusion-2-1 (the rest are diffusers' and transformers' defaults)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if structure == "sd21":
        unet = UNet2DConditionModel(
            sample_size=96, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                              num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                              projection_dim=512, bos_token_id=49406, eos_token_id=49407)
    elif structure == "tiny":
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, layers_per_block=1,
        )
        text = CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
                              eos_token_id=49407)
    else:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    return unet, vae, CLIPTextModel(text)


def empty_prompt_tokenizer():
    """A CLIP tokenizer that knows only the start and end tokens (ids 49406, 49407, as CLIP's)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({"<|startoftext|>": 49406, "<|endoftext|>": 49407}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=77)


def write_genpercept_folder(folder: str | Path, structure: str = "sd21", *, processing_resolution: int = 768,
                            seed: int = 0) -> Path:
    """Write a GenPercept disparity teacher folder of ``structure`` with random weights (seeded); returns it."""
    from hf_distill.teachers import TEACHER_CONFIG_NAME

    folder = Path(folder)
    torch.manual_seed(seed)
    unet, vae, text_encoder = genpercept_modules(structure)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    empty_prompt_tokenizer().save_pretrained(folder / "tokenizer")
    (folder / TEACHER_CONFIG_NAME).write_text(json.dumps(
        {"family": "genpercept-disparity", "processing_resolution": processing_resolution}))
    return folder
