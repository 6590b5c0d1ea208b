#!/usr/bin/env python
"""Distil Depth Anything teachers into a student with cross-context distillation.

    python scripts/distill.py                                   # the embedded demo (configs/demo.yaml)
    python scripts/distill.py --config configs/nyu.yaml --dataset_dir data/nyu
    accelerate launch scripts/distill.py --config configs/sa1b_multiteacher.yaml --dataset_dir /data/sa1b

Every field of ModelArguments, DataArguments and DistillationArguments (a transformers TrainingArguments) is a
flag; the seed re-implementation's names (--batch_size, --lr, --num_iterations, --num_epochs,
--checkpoint_interval, --use_nyu_dataset, --num_segments, ...) work too. Flags override --config values.
"""

from __future__ import annotations

import sys

from hf_distill.demo import run_demo
from hf_distill.training.arguments import parse_distill_args
from hf_distill.training.run import run_distillation


def main(argv: list[str]) -> int:
    try:
        if not argv:
            run_demo()
            return 0
        model_args, data_args, training_args = parse_distill_args(argv)
        trainer = run_distillation(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"distill.py: error: {error}", file=sys.stderr)
        return 2
    if trainer.is_world_process_zero():
        print(f"Student written to {training_args.output_dir} (from_pretrained / pipeline folder, "
              "student_final.safetensors, visualizations/, train.log)")
    # Destroys the process group: a gloo group left to interpreter shutdown can abort a rank after training.
    trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
