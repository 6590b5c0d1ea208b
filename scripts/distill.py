#!/usr/bin/env python
"""Distil Depth Anything teachers into a student with cross-context distillation.

    python scripts/distill.py                              # the embedded demo (= --demo): recipe "demo" + report
    python scripts/distill.py --demo --max_steps 50        # the demo with overrides
    python scripts/distill.py --config nyu --dataset_dir data/nyu
    python scripts/distill.py --config nyu --dataset_dir data/nyu --preflight   # check it all first, 1 real step
    accelerate launch scripts/distill.py --config sa1b_multiteacher --dataset_dir /data/sa1b

--config takes a YAML/JSON file or a shipped recipe by name (demo, nyu, sa1b_multiteacher). Every field of
ModelArguments, DataArguments and DistillationArguments (a transformers TrainingArguments) is a
flag; the seed re-implementation's names (--batch_size, --lr, --num_iterations, --num_epochs,
--checkpoint_interval, --use_nyu_dataset, --num_segments, ...) work too. Flags override --config values.
"""

from __future__ import annotations

import logging
import sys

from accelerate import PartialState

from hf_distill.demo import run_demo
from hf_distill.training.callbacks import NonFiniteLossError
from hf_distill.training.cli import parse_distill_args
from hf_distill.training.preflight import CheckResult, run_preflight
from hf_distill.training.preflight.host import parse_for_preflight
from hf_distill.training.run import run_distillation


def main(argv: list[str]) -> int:
    # The library's records (skipped broken images, resume, non-finite steps) reach the console; train.log gets them
    # too (LogFileCallback).
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_distill").setLevel(logging.INFO)
    try:
        if not argv or argv[0] == "--demo":
            run_demo(argv[1:])
        else:
            # A GPU recipe checked on a login node: the precision transformers refuses here is one row of the report.
            if any(arg.split("=")[0] == "--preflight" for arg in argv):
                model_args, data_args, training_args, host_rows = parse_for_preflight(argv, parse_distill_args,
                                                                                      CheckResult)
                if host_rows and not training_args.preflight:  # --preflight false: the refusal stands
                    parse_distill_args(argv)
            else:
                model_args, data_args, training_args = parse_distill_args(argv)
                host_rows = []
            if training_args.preflight:
                report = run_preflight(model_args, data_args, training_args, host_rows=host_rows)
                if PartialState().is_main_process:
                    print(report.format())
                PartialState().destroy_process_group()
                return 0 if report.passed else 1
            trainer = run_distillation(model_args, data_args, training_args)
            if trainer.is_world_process_zero():
                print(f"Student written to {training_args.output_dir} (from_pretrained / pipeline folder, "
                      "student_final.safetensors, visualizations/, train.log)")
    except (ValueError, FileNotFoundError, OSError, NonFiniteLossError) as error:
        print(f"distill.py: error: {error}", file=sys.stderr)
        return 2
    # Destroys the process group: a gloo group left to interpreter shutdown can abort a rank after training. Every
    # rank waits for the others first: a rank that tears its group down while the main process still writes the
    # student and its card can abort ("terminate called without an active exception").
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
