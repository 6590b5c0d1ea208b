#!/usr/bin/env python
"""Memory of the paper's two teachers, with their real structures and random weights (no download).

    python -m benchmarks.bench_teachers                     # both teachers, batch 1, 560 views, CPU float32
    python -m benchmarks.bench_teachers --device cuda --dtype bfloat16 --batch 24

Each teacher is measured in its own process: parameters (count and bytes in the measured dtype), the process
memory before its forward, and the peak during one forward on (batch, 3, size, size) views: RSS sampled every
2 ms on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Structures: Depth Anything V2 Large
(``depth_config``) and GenPercept = Stable Diffusion 2.1's UNet (768-v), VAE and OpenCLIP-H text encoder configs,
run through ``hf_distill.teachers.GenPerceptTeacher`` (768 longest edge, the text encoder dropped after encoding
the empty prompt).

    python -m benchmarks.bench_teachers --genpercept_vae                   # 24 views at 768: chunked vs one call

``--genpercept_vae`` measures GenPercept's VAE at the paper's step (24 views, 768 x 768) for one call over all
views and for the teacher's chunks (``GenPerceptTeacher.vae_chunk``). On the meta device (shapes only, nothing
computed), SD 2.1's real VAE: the largest tensor of one call (CUDA kernels index int32: it must stay below 2^31
elements) and the FLOPs per view. On CPU, a stand-in of the same structure with every channel count divided by
--width_divisor (16): peak memory (RSS) and time per view of the teacher's decode, each configuration in its own
process. Scaled to SD 2.1 by the benchmark's arithmetic: activations are linear in the channel count (memory x
divisor), FLOPs quadratic (time x the meta FLOP ratio).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time

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
    from hf_distill.teachers import TEACHER_FAMILIES, GenPerceptTeacher
    from hf_distill.testing.genpercept import empty_prompt_tokenizer, genpercept_modules

    unet, vae, text_encoder = genpercept_modules("sd21")
    text_parameters = sum(p.numel() for p in text_encoder.parameters())
    teacher = GenPerceptTeacher(unet, vae, text_encoder, empty_prompt_tokenizer(),
                                TEACHER_FAMILIES["genpercept-disparity"])
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


# ---- GenPercept's VAE at 768: chunks ----------------------------------------------------------------------

SD21_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32}


def genpercept_vae(width_divisor: int = 1):
    """SD 2.1's VAE structure, every channel count (and the group count) divided by ``width_divisor``."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=tuple(c // width_divisor for c in SD21_VAE["block_out_channels"]),
        layers_per_block=SD21_VAE["layers_per_block"], norm_num_groups=SD21_VAE["norm_num_groups"] // width_divisor,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def vae_teacher(vae, chunk: int | None):
    """A GenPercept teacher around ``vae`` (a tiny UNet and text encoder: only its ``decode`` is measured)."""
    from hf_distill.teachers import TEACHER_FAMILIES, GenPerceptTeacher
    from hf_distill.testing.genpercept import empty_prompt_tokenizer, genpercept_modules

    unet, _, text_encoder = genpercept_modules("tiny")
    return GenPerceptTeacher(unet, vae, text_encoder, empty_prompt_tokenizer(),
                             TEACHER_FAMILIES["genpercept-disparity"], vae_chunk_size=chunk).eval()


def decode_in_chunks(teacher, latent):
    """What ``GenPerceptTeacher.forward`` does with the UNet's prediction: decode in ``vae_chunk`` chunks."""
    chunks = -(-latent.shape[0] // teacher.vae_chunk(latent.shape[-2] * 8, latent.shape[-1] * 8))
    return torch.cat([teacher.decode(part).mean(dim=1) for part in latent.tensor_split(chunks)])


def meta_decode(batch: int, size: int, chunk: int | None) -> dict:
    """SD 2.1's VAE decode on the meta device: the largest tensor and the FLOPs (FlopCounterMode)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes = [t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            Largest.largest = max([Largest.largest, *sizes])
            return out

    with torch.device("meta"):
        teacher = vae_teacher(genpercept_vae(), chunk)
        latent = torch.empty(batch, 4, size // 8, size // 8)
    with torch.no_grad(), FlopCounterMode(display=False) as flops, Largest():
        decode_in_chunks(teacher, latent)
    return {"views_per_call": teacher.vae_chunk(size, size), "largest_tensor_elements": Largest.largest,
            "below_2^31": Largest.largest < 2**31, "decode_tflop_per_view": flops.get_total_flops() / batch / 1e12}


def measure_decode(batch: int, size: int, chunk: int | None, width_divisor: int) -> dict:
    """The stand-in's decode on CPU (float32): peak RSS increase and time per view."""
    torch.manual_seed(0)
    teacher = vae_teacher(genpercept_vae(width_divisor), chunk)
    latent = torch.randn(batch, 4, size // 8, size // 8)
    release_freed_memory()
    before = rss()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with torch.no_grad():
        disparity = decode_in_chunks(teacher, latent)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    assert disparity.shape == (batch, size, size) and disparity.dtype == torch.float32
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as flops:  # the stand-in's own FLOPs, for the scaling
        decode_in_chunks(teacher, latent[:1])
    return {"views_per_call": teacher.vae_chunk(size, size), "peak_increase_GiB": (peak[0] - before) / GIB,
            "seconds_per_view": seconds / batch, "decode_tflop_per_view": flops.get_total_flops() / 1e12}


def genpercept_vae_study(batch: int, size: int, width_divisor: int) -> dict:
    """One call over all views vs the teacher's chunks: real structure on meta, stand-in measured and scaled."""
    rows = []
    for label, chunk in (("one call", batch), ("teacher's chunks", None)):
        real = meta_decode(batch, size, chunk)
        # The stand-in decodes in the real teacher's chunks (its own narrow widths would allow more views).
        command = [sys.executable, "-m", "benchmarks.bench_teachers", "--decode_chunk", str(real["views_per_call"]),
                   "--batch", str(batch), "--size", str(size), "--width_divisor", str(width_divisor)]
        measured = json.loads(subprocess.run(command, capture_output=True, text=True, check=True)
                              .stdout.strip().splitlines()[-1])
        flop_ratio = real["decode_tflop_per_view"] / measured["decode_tflop_per_view"]
        rows.append({
            "decode": label, "views_per_call": real["views_per_call"], "sd21_largest_tensor": real,
            "stand_in": measured, "flop_ratio": flop_ratio,
            "sd21_projected_peak_GiB_fp32": measured["peak_increase_GiB"] * width_divisor,
            "sd21_projected_peak_GiB_bf16": measured["peak_increase_GiB"] * width_divisor / 2,
            "sd21_projected_cpu_seconds_per_view": measured["seconds_per_view"] * flop_ratio,
        })
    return {"batch": batch, "size": size, "width_divisor": width_divisor, "rows": rows,
            "chunked_over_one_call": {
                "peak": rows[1]["stand_in"]["peak_increase_GiB"] / rows[0]["stand_in"]["peak_increase_GiB"],
                "time_per_view": rows[1]["stand_in"]["seconds_per_view"] / rows[0]["stand_in"]["seconds_per_view"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", choices=[*BUILDERS, "all"], default="all")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=560, help="view side (the paper's 560)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--genpercept_vae", action="store_true",
                        help="GenPercept's VAE decode at --size (default 768) for --batch (default 24) views: one "
                             "call vs the teacher's chunks.")
    parser.add_argument("--width_divisor", type=int, default=16, help="Channel divisor of the --genpercept_vae "
                                                                      "stand-in.")
    parser.add_argument("--decode_chunk", type=int, default=None, help=argparse.SUPPRESS)  # views per call
    args = parser.parse_args()
    if args.decode_chunk is not None:  # one measured configuration, in its own process
        print(json.dumps(measure_decode(args.batch, args.size, args.decode_chunk, args.width_divisor)))
        return
    if args.genpercept_vae:
        batch = 24 if args.batch == 1 else args.batch
        size = 768 if args.size == 560 else args.size
        print(json.dumps(genpercept_vae_study(batch, size, args.width_divisor), indent=1))
        return
    if args.teacher != "all":
        print(json.dumps(measure(args.teacher, args.batch, args.size, args.device, getattr(torch, args.dtype))))
        return
    for name in BUILDERS:  # one process each, so that one teacher's memory does not hide the other's
        command = [sys.executable, "-m", "benchmarks.bench_teachers", "--teacher", name, "--batch", str(args.batch),
                   "--size", str(args.size), "--device", args.device, "--dtype", args.dtype]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
