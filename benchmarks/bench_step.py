#!/usr/bin/env python
"""One distillation step of DistillationTrainer, broken down, against the bare model work it cannot avoid.

    python -m benchmarks.bench_step                       # V2-Small-structured teacher and student, 224 views
    python -m benchmarks.bench_step --teacher large --student base --size 560 --batch_size 8 --device cuda

Measured in the same run, medians over --repeats:
  data      building the batch (views of generated 480x640 JPEGs + collation; in training this runs in workers)
  teacher   the teacher forwards on the global views and the local patches (one batched call)
  student   one student forward + backward on the global views
  losses    DistillationLoss forward (+ its share of the backward, measured as the difference)
  optimizer AdamW step
  step      trainer.training_step + optimizer step (what one training iteration costs besides data)
  bare      teacher forwards on the same views + one student forward/backward with a trivial loss
  seed      the public re-implementation's structure: the student runs twice (global views and local
            patches), with the same teacher forwards
Then samples/s of the step and peak memory (process RSS on CPU, allocated GPU memory on CUDA), the ratio
seed_over_ours=<seed / step>, and as the last line overhead_ratio=<step / bare> (goal <= 1.10).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import DepthAnythingForDepthEstimation

from hf_distill.data import collate_views
from hf_distill.models import default_image_processor, depth_config, start_fresh_decoder
from hf_distill.testing import write_image_folder
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer
from hf_distill.training.trainer import normalize_views


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="small", choices=["small", "base", "large"])
    parser.add_argument("--student", default="small", choices=["small", "base", "large"])
    parser.add_argument("--size", type=int, default=224, help="global and local view side")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="draw of the random teacher and student weights")
    args = parser.parse_args()
    device = torch.device(args.device)

    # Random weights, drawn once per --seed: the loss's cost depends on the teacher's map (ties in it are what the
    # median's bucket selection cannot split), so a draw is part of the measurement. A raw random decoder outputs a
    # near-constant map full of exact zeros, unlike any trained teacher: the teacher's decoder gets the fresh start
    # that --student_init random gives a student (He weights, output level and spread set on generated scenes).
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for role, size in (("teacher", args.teacher), ("student", args.student)):
            model = DepthAnythingForDepthEstimation(depth_config(f"depthanything-{size}"))
            (start_fresh_decoder(model) if role == "teacher" else model).save_pretrained(root / role)
            default_image_processor().save_pretrained(root / role)
        data = write_image_folder(root / "images", num_images=2 * args.batch_size, size=(480, 640), seed=0)
        argv = [
            "--teacher_models", str(root / "teacher"), "--student_arch", str(root / "student"),
            "--student_init", "random", "--dataset_dir", str(data), "--output_dir", str(root / "out"),
            "--global_crop_size", str(args.size), "--local_crop_size", str(args.size),
            "--batch_size", str(args.batch_size), "--num_iterations", "1", "--report_to", "none",
            "--visualize_steps", "0", *(["--use_cpu"] if device.type == "cpu" else []), *(["--bf16"] if args.bf16 else []),
        ]
        trainer = build_trainer(*parse_distill_args(argv))
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step reads it
        model, optimizer = trainer.model, trainer.optimizer
        dataset = trainer.train_dataset

        def make_batch():
            return collate_views([dataset[i] for i in range(args.batch_size)])

        batch = {k: v.to(device) for k, v in make_batch().items()}
        global_view, local_views = batch["global_view"], batch["local_views"]
        student_in = normalize_views(global_view, trainer.student_normalization)
        patches_in = normalize_views(local_views.flatten(0, 1), trainer.student_normalization)

        def teacher():
            return trainer.run_teacher(0, global_view, local_views, want_tokens=True)

        def student():
            with trainer.compute_loss_context_manager():
                depth, _ = model(student_in, teacher_index=0)
            depth.mean().backward()

        teacher_out = teacher()
        with trainer.compute_loss_context_manager():
            student_out = model(student_in, teacher_index=0)

        def losses():
            total, _ = trainer.loss_fn(student_out[0].detach().requires_grad_(), teacher_out[0],
                                       teacher_patches=teacher_out[1], global_boxes=batch["global_boxes"],
                                       student_tokens=student_out[1].detach().requires_grad_(),
                                       teacher_tokens=teacher_out[2])
            total.backward()

        def optimizer_step():
            optimizer.step()

        def step():
            trainer.training_step(model, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def bare():
            teacher()
            student()

        def seed_structure():
            teacher()
            student()
            with trainer.compute_loss_context_manager():
                depth, _ = model(patches_in, teacher_index=None)
            depth.mean().backward()

        figures = {
            "data": timed(make_batch, args.repeats, device),
            "teacher": timed(teacher, args.repeats, device),
            "student": timed(student, args.repeats, device),
            "losses": timed(losses, args.repeats, device),
            "optimizer": timed(optimizer_step, args.repeats, device),
        }
        optimizer.zero_grad(set_to_none=True)
        figures["step"] = timed(step, args.repeats, device)
        figures["bare"] = timed(bare, args.repeats, device)
        figures["seed"] = timed(seed_structure, args.repeats, device)

    print(f"teacher={args.teacher} student={args.student} seed={args.seed} size={args.size} batch={args.batch_size} "
          f"patches={local_views.shape[1]} device={device} threads={torch.get_num_threads()}")
    for name, seconds in figures.items():
        print(f"{name:>10}: {seconds * 1000:9.1f} ms")
    if device.type == "cuda":
        peak = f"peak_gpu_memory={torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    else:
        peak = f"peak_rss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    print(f"samples_per_second={args.batch_size / figures['step']:.2f} {peak}")
    print(f"seed_over_ours={figures['seed'] / figures['step']:.2f}")
    print(f"overhead_ratio={figures['step'] / figures['bare']:.2f}")


if __name__ == "__main__":
    main()
