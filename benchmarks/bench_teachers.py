#!/usr/bin/env python
"""Memory of the paper's two teachers, with their real structures and random weights (no download).

    python benchmarks/bench_teachers.py                     # both teachers, batch 1, 560 views, CPU float32
    python benchmarks/bench_teachers.py --device cuda --dtype bfloat16 --batch 24

Each teacher is measured in its own process: parameters (count and bytes in the measured dtype), the process
memory before its forward, and the peak during one forward on (batch, 3, size, size) views: RSS sampled every
2 ms on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Structures: Depth Anything V2 Large
(``depth_config``) and GenPercept = Stable Diffusion 2.1's UNet (768-v), VAE and OpenCLIP-H text encoder configs,
run through ``hf_distill.teachers.GenPerceptTeacher`` (768 longest edge, the text encoder dropped after encoding
the empty prompt).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = 1024**3


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def release_freed_memory() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def build_depth_anything_large():
    from hf_distill.models import IMAGENET_MEAN, IMAGENET_STD, depth_config
    from hf_distill.teachers import TEACHER_FAMILIES, TransformersDepthTeacher
    from transformers import DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation(depth_config("depthanything-large"))
    return TransformersDepthTeacher(model, TEACHER_FAMILIES["depth_anything"], (IMAGENET_MEAN, IMAGENET_STD)), {}


def build_genpercept():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from hf_distill.teachers import TEACHER_FAMILIES, GenPerceptTeacher

    # stabilityai/stable-diffusion-2-1 unet/vae/text_encoder config.json values (the rest are diffusers defaults)
    unet = UNet2DConditionModel(
        sample_size=96, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    ))
    text_parameters = sum(p.numel() for p in text_encoder.parameters())
    with tempfile.TemporaryDirectory() as tmp:  # CLIP's start/end tokens: what the empty prompt tokenises to
        (Path(tmp) / "vocab.json").write_text(json.dumps({"<|startoftext|>": 49406, "<|endoftext|>": 49407}))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)
    teacher = GenPerceptTeacher(unet, vae, text_encoder, tokenizer, TEACHER_FAMILIES["genpercept-disparity"])
    del text_encoder
    return teacher, {"text_encoder_parameters_at_load": text_parameters,
                     "unet_parameters": sum(p.numel() for p in unet.parameters()),
                     "vae_parameters": sum(p.numel() for p in vae.parameters())}


BUILDERS = {"depthanything-large": build_depth_anything_large, "genpercept-disparity": build_genpercept}


def measure(name: str, batch: int, size: int, device: str, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    teacher, extra = BUILDERS[name]()
    teacher = teacher.to(device=device, dtype=dtype).eval().requires_grad_(False)
    views = torch.rand(batch, 3, size, size, device=device)
    params = sum(p.numel() for p in teacher.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in teacher.parameters())
    release_freed_memory()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    if not cuda:
        sampler.start()
    start = time.perf_counter()
    with torch.no_grad():
        disparity, _ = teacher(views)
    if cuda:
        torch.cuda.synchronize()
        peak[0] = torch.cuda.max_memory_allocated()
    seconds = time.perf_counter() - start
    done.set()
    assert disparity.shape == (batch, size, size) and bool(torch.isfinite(disparity).all())
    return {
        "teacher": name, "device": device, "dtype": str(dtype).removeprefix("torch."), "batch": batch, "size": size,
        "parameters": params, "parameter_GiB": param_bytes / GIB, "memory_before_forward_GiB": before / GIB,
        "peak_during_forward_GiB": peak[0] / GIB, "forward_increase_GiB": (peak[0] - before) / GIB,
        "forward_seconds": seconds, **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", choices=[*BUILDERS, "all"], default="all")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=560, help="view side (the paper's 560)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.teacher != "all":
        print(json.dumps(measure(args.teacher, args.batch, args.size, args.device, getattr(torch, args.dtype))))
        return
    for name in BUILDERS:  # one process each, so that one teacher's memory does not hide the other's
        command = [sys.executable, __file__, "--teacher", name, "--batch", str(args.batch), "--size",
                   str(args.size), "--device", args.device, "--dtype", args.dtype]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
