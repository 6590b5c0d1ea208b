#!/usr/bin/env bash
# Single-teacher cross-context distillation (seed usage: edit or export DATASET_DIR / OUTPUT_DIR).
#   DATASET_DIR=/data/sa1b OUTPUT_DIR=output/distill ./scripts/train_distill.sh [extra flags]
# Extra flags go to scripts/distill.py; add --preflight to check everything and train one step before the run.
set -euo pipefail
DATASET_DIR=${DATASET_DIR:-data/sa1b}
OUTPUT_DIR=${OUTPUT_DIR:-output/distill}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/single_gpu.yaml}
cd "$(dirname "$0")/.."
accelerate launch --config_file "$ACCELERATE_CONFIG" scripts/distill.py \
    --config sa1b_multiteacher \
    --teacher_models depthanything-large \
    --dataset_dir "$DATASET_DIR" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
