"""Time to the first new step of a streamed (webdataset) run: resumed at step K versus started at step 0.

    python -m benchmarks.bench_resume                    # K = 200, batch 8, 480x640 JPEG shards, tiny models

A resumed stream is positioned from the checkpoint's stream_state_{rank}.json: the K x batch examples already trained
on are read from the tar but neither decoded nor cropped (the Trainer's own resume would decode and crop them all).
Both timings run the real DistillationTrainer from `trainer.train(...)` to the end of its first step, on the same
shards; the ratio resumed / fresh is printed (goal: at most 1.2).
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import DepthAnythingForDepthEstimation, TrainerCallback

from hf_distill.data.synthetic import render_scene
from hf_distill.models import default_image_processor, tiny_depth_config
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.run import build_trainer


def write_shards(folder: Path, num_examples: int, height: int, width: int, per_shard: int = 500) -> None:
    """SA-1B-style shards of `num_examples` JPEGs (16 distinct scenes repeated: decoding cost is what matters)."""
    jpegs = []
    for seed in range(16):
        buffer = io.BytesIO()
        Image.fromarray(render_scene(seed, height, width).image).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    for shard in range(0, num_examples, per_shard):
        with tarfile.open(folder / f"sa_{shard // per_shard:06d}.tar", "w") as tar:
            for i in range(shard, min(shard + per_shard, num_examples)):
                for name, data in ((f"sa_{i}.jpg", jpegs[i % 16]), (f"sa_{i}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


class FirstStepTimer(TrainerCallback):
    """Records when the first step of this `train()` call ends, then stops training."""

    def __init__(self) -> None:
        self.ended: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        self.ended = time.perf_counter()
        control.should_training_stop = True


def time_to_first_step(argv: list[str], resume: str | None) -> float:
    trainer = build_trainer(*parse_distill_args(argv))
    timer = FirstStepTimer()
    trainer.add_callback(timer)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    return timer.ended - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume_step", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=3, help="timings per case; the best is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        for name, like in (("teacher", "base"), ("student", "small")):
            DepthAnythingForDepthEstimation(tiny_depth_config(like)).save_pretrained(root / name)
            default_image_processor(size=56).save_pretrained(root / name)
        (root / "shards").mkdir()
        write_shards(root / "shards", (args.resume_step + 10) * args.batch_size, *args.image_size)

        def argv(output_dir: Path, max_steps: int) -> list[str]:
            return ["--teacher_models", str(root / "teacher"), "--student_arch", str(root / "student"),
                    "--student_init", "random", "--dataset_dir", str(root / "shards"), "--dataset_format",
                    "webdataset", "--output_dir", str(output_dir), "--global_crop_size", "56", "--local_crop_size",
                    "56", "--min_region", "224", "--per_device_train_batch_size", str(args.batch_size),
                    "--max_steps", str(max_steps), "--save_steps", str(args.resume_step), "--logging_steps", "1000",
                    "--visualize_steps", "0", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true"]

        trained = root / "trained"
        started = time.perf_counter()
        build_trainer(*parse_distill_args(argv(trained, args.resume_step))).train()
        print(f"trained {args.resume_step} steps in {time.perf_counter() - started:.1f} s (writes checkpoint-"
              f"{args.resume_step})")
        checkpoint = str(trained / f"checkpoint-{args.resume_step}")

        fresh = min(time_to_first_step(argv(root / f"fresh{r}", args.resume_step + 1), None)
                    for r in range(args.rounds))
        resumed = min(time_to_first_step(argv(trained, args.resume_step + 1), checkpoint)
                      for r in range(args.rounds))
    print(f"time to first step, fresh (step 0):       {fresh:.3f} s")
    print(f"time to first step, resumed at step {args.resume_step}: {resumed:.3f} s")
    print(f"ratio resumed / fresh: {resumed / fresh:.2f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
