"""Speed of the HDN/median-MAD losses against a straightforward batched baseline (docs/method.md, Losses).

The baseline computes every context as a full-size mask, stacks them and takes statistics with
``torch.nanmedian`` over the masked maps, the way the public HDN code (icoz69/HDN ``demo.py``) does,
with the exact-mean MAD of docs/method.md (Losses). Usage (CPU, two threads unless told otherwise):

    python -m benchmarks.bench_losses [--threads 2] [--batch 8] [--size 560] [--repeats 3] [--device cpu]

``--engine_baseline FILE`` instead times this median/MAD engine against an earlier single-file version of it
(``git show REV:hf_distill/losses/median_mad.py > old.py`` for a REV before the engine was split into
``median_mad.py``, ``value_keys.py`` and the ``selection*.py`` modules), interleaved in one process, and prints
old / new per case; ``--static`` runs this engine with the accelerator path's fixed shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time

import torch
import torch.nn.functional as F

import hf_distill.losses.median_mad as median_mad
import hf_distill.losses.normalize as normalize
from hf_distill.losses import (
    DistillationLoss,
    FeatureProjector,
    feature_alignment_loss,
    gradient_matching_loss,
    local_global_loss,
    normalized_l1,
)


def baseline_contexts(teacher: torch.Tensor, mask: torch.Tensor, variant: str, levels: list[int]) -> torch.Tensor:
    """(K, B, H, W) bool: one full-size mask per context."""
    batch, height, width = teacher.shape
    nan = torch.where(mask, teacher, torch.nan).reshape(batch, -1)
    masks = []
    for level in levels:
        bins = 2**level
        if variant == "ds" and level > 0:
            for i in range(bins):
                for j in range(bins):
                    rows = slice(i * height // bins, (i + 1) * height // bins)
                    columns = slice(j * width // bins, (j + 1) * width // bins)
                    cell = torch.zeros_like(mask)
                    cell[:, rows, columns] = True
                    masks.append(cell & mask)
            continue
        if variant == "dp" and level > 0:
            q = torch.arange(bins + 1, dtype=torch.float32, device=teacher.device) / bins
            edges = nan.nanquantile(q, dim=1).T[:, :, None, None]  # (B, bins + 1, 1, 1)
        else:
            low = nan.nan_to_num(torch.inf).amin(1)
            high = nan.nan_to_num(-torch.inf).amax(1)
            frac = torch.arange(bins + 1, dtype=torch.float32, device=teacher.device) / bins
            edges = (low[:, None] + (high - low)[:, None] * frac)[:, :, None, None]
        for i in range(bins):
            inside = mask & (teacher >= edges[:, i])
            if i < bins - 1:
                inside &= teacher < edges[:, i + 1]
            masks.append(inside)
    return torch.stack(masks)


def baseline_normalize(x: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """(K, B, H, W) x normalised over each context (nanmedian + exact-mean MAD)."""
    k, batch = contexts.shape[:2]
    flat = x.expand_as(contexts).reshape(k, batch, -1)
    inside = contexts.reshape(k, batch, -1)
    median = torch.where(inside, flat, torch.nan).nanmedian(-1, keepdim=True)[0].nan_to_num(0.0)
    deviation = torch.where(inside, (flat - median).abs(), 0.0)
    mad = deviation.sum(-1, keepdim=True) / inside.sum(-1, keepdim=True).clamp(min=1)
    return ((flat - median) / (mad + 1e-6)).reshape(contexts.shape)


def baseline_loss(student, teacher, mask, normalization="hybrid", variant="dr", levels=3) -> torch.Tensor:
    """``L_Dis`` computed the straightforward way: per-location mean over contexts, mean over valid pixels."""
    chosen = {"global": [0], "local": [levels - 1], "hybrid": list(range(levels))}[normalization]
    contexts = baseline_contexts(teacher, mask, variant, chosen)
    error = (baseline_normalize(student, contexts) - baseline_normalize(teacher, contexts)).abs()
    error = torch.where(contexts, error, 0.0).sum(0) / contexts.sum(0).clamp(min=1)
    return error[mask].sum() / mask.sum()


def interleaved(functions: dict, repeats: int) -> dict[str, float]:
    """Best wall time (seconds) of each function, runs interleaved so machine load hits all alike."""
    for fn in functions.values():
        fn()  # warm-up
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def smooth_maps(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth-like teacher (smooth, skewed, positive) and a student close to it up to noise, non-negative
    like the ReLU output of a Depth Anything head (a few exact zeros)."""
    coarse = torch.randn(batch, 1, size // 16, size // 16, device=device)
    log_depth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    teacher = torch.exp(log_depth + 0.05 * torch.randn_like(log_depth))
    student = teacher * (1 + 0.1 * torch.randn_like(teacher)) + 0.05 * torch.randn_like(teacher)
    return student.clamp(min=0), teacher


@contextlib.contextmanager
def engine(module):
    """Run the losses on the median/MAD engine of ``module`` (a version of hf_distill/losses/median_mad.py)."""
    saved = normalize.context_statistics, normalize.paired_l1_sums
    normalize.context_statistics, normalize.paired_l1_sums = module.context_statistics, module.paired_l1_sums
    try:
        yield
    finally:
        normalize.context_statistics, normalize.paired_l1_sums = saved


def compare_engines(path: str, student, teacher, repeats: int, sync) -> None:
    """Forward+backward of every normalisation case on the engine in ``path`` and on this one; ratio old / new."""
    spec = importlib.util.spec_from_file_location("baseline_median_mad", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    print(f"{'case':<13}{'old f+b':>9}{'new f+b':>9}{'old/new':>9}{'|diff|':>10}")
    ratios = []
    for normalization, variant in [("global", "dr"), ("local", "dr"), ("local", "dp"), ("local", "ds"),
                                   ("hybrid", "dr"), ("hybrid", "dp"), ("hybrid", "ds")]:
        kwargs = dict(normalization=normalization, hdn_variant=variant, hdn_levels=3)

        def run(module) -> torch.Tensor:
            with engine(module):
                s = student.detach().requires_grad_(True)
                loss = normalized_l1(s, teacher, **kwargs)
                loss.backward()
                sync()
            return loss.detach()

        diff = (run(old) - run(median_mad)).abs().item()
        t = interleaved({"old": lambda: run(old), "new": lambda: run(median_mad)}, repeats)
        ratios.append(t["old"] / t["new"])
        print(f"{normalization + '/' + variant:<13}{t['old'] * 1e3:>9.0f}{t['new'] * 1e3:>9.0f}{ratios[-1]:>9.2f}"
              f"{diff:>10.1e}", flush=True)
    geomean = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean old/new: {geomean:.2f} (> 1: this engine is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=560)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine_baseline", help="an earlier single-file median_mad.py to time this engine against")
    parser.add_argument("--static", action="store_true", help="this engine with fixed shapes (accelerator path)")
    args = parser.parse_args()
    if args.static:
        median_mad.STATIC_SHAPES = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    student, teacher = smooth_maps(args.batch, args.size, device)
    full = torch.ones_like(teacher, dtype=torch.bool)
    if args.engine_baseline:
        print(f"device={device} threads={torch.get_num_threads()} maps={tuple(teacher.shape)} best of "
              f"{args.repeats}, interleaved; forward+backward in ms")
        compare_engines(args.engine_baseline, student, teacher, args.repeats, sync)
        return
    print(f"device={device} threads={torch.get_num_threads()} maps={tuple(teacher.shape)} "
          f"best of {args.repeats}, interleaved; times in ms")
    print(f"{'case':<13}{'ours fwd':>9}{'base fwd':>10}{'ratio':>7}{'ours f+b':>10}{'base f+b':>10}{'ratio':>7}"
          f"{'|diff|':>10}")
    for normalization, variant in [("global", "dr"), ("local", "dr"), ("local", "dp"), ("local", "ds"),
                                   ("hybrid", "dr"), ("hybrid", "dp"), ("hybrid", "ds")]:
        kwargs = dict(normalization=normalization, hdn_variant=variant, hdn_levels=3)

        def ours(backward: bool) -> torch.Tensor:
            s = student.detach().requires_grad_(backward)
            loss = normalized_l1(s, teacher, **kwargs)
            if backward:
                loss.backward()
            sync()
            return loss.detach()

        def base(backward: bool) -> torch.Tensor:
            s = student.detach().requires_grad_(backward)
            loss = baseline_loss(s, teacher, full, normalization, variant, 3)
            if backward:
                loss.backward()
            sync()
            return loss.detach()

        diff = (ours(False) - base(False)).abs().item()
        t = interleaved({"ours": lambda: ours(False), "base": lambda: base(False),
                         "ours_fb": lambda: ours(True), "base_fb": lambda: base(True)}, args.repeats)
        print(f"{normalization + '/' + variant:<13}{t['ours'] * 1e3:>9.0f}{t['base'] * 1e3:>10.0f}"
              f"{t['base'] / t['ours']:>7.1f}{t['ours_fb'] * 1e3:>10.0f}{t['base_fb'] * 1e3:>10.0f}"
              f"{t['base_fb'] / t['ours_fb']:>7.1f}{diff:>10.1e}", flush=True)

    # The whole DistillationLoss at a training-like configuration.
    patches, tokens, student_dim, teacher_dim = 2, 1600, 384, 1024
    criterion = DistillationLoss()
    projector = FeatureProjector(student_dim, teacher_dim).to(device)
    _, teacher_patches = smooth_maps(args.batch * patches, args.size, device)
    teacher_patches = teacher_patches.reshape(args.batch, patches, args.size, args.size)
    boxes = torch.tensor([[40.0, 60.5, 320.25, 340.5], [200.0, 100.0, 480.0, 380.0]], device=device)
    boxes = boxes.expand(args.batch, -1, -1)
    student_tokens = torch.randn(args.batch, tokens, student_dim, device=device)
    teacher_tokens = torch.randn(args.batch, tokens, teacher_dim, device=device)

    def backward_of(loss_fn) -> callable:
        def run() -> None:
            loss_fn(student.detach().requires_grad_(True)).backward()
            sync()

        return run

    def step() -> None:
        s = student.detach().requires_grad_(True)
        st = student_tokens.detach().requires_grad_(True)
        total, _ = criterion(s, teacher, teacher_patches, boxes, st, teacher_tokens, projector)
        total.backward()
        sync()

    def feat() -> None:
        st = student_tokens.detach().requires_grad_(True)
        feature_alignment_loss(st, teacher_tokens, projector).backward()
        sync()

    t = interleaved(
        {
            "total": step,
            "sc": backward_of(lambda s: normalized_l1(s, teacher)),
            "lg": backward_of(lambda s: local_global_loss(s, teacher_patches, boxes)),
            "grad": backward_of(lambda s: gradient_matching_loss(s, teacher)),
            "feat": feat,
        },
        args.repeats,
    )
    print(f"DistillationLoss forward+backward (B={args.batch}, global {args.size}, {patches} patches {args.size}, "
          f"tokens {tokens}x{student_dim}->{teacher_dim}, sc+lg hybrid/dr levels 3, grad, feat): "
          f"{t['total'] * 1e3:.0f} ms; per term f+b: "
          + ", ".join(f"{name} {t[name] * 1e3:.0f}" for name in ["sc", "lg", "grad", "feat"]) + " ms")


if __name__ == "__main__":
    main()
