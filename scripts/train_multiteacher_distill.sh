#!/usr/bin/env bash
# Multi-teacher distillation (paper recipe: two teachers drawn 7:3 per step) on webdataset shards.
#   DATASET_DIR=/data/sa1b OUTPUT_DIR=output/sa1b_multiteacher ./scripts/train_multiteacher_distill.sh
# Extra flags go to scripts/distill.py; add --preflight to check everything and train one step before the run.
set -euo pipefail
DATASET_DIR=${DATASET_DIR:-data/sa1b}
OUTPUT_DIR=${OUTPUT_DIR:-output/sa1b_multiteacher}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/multi_gpu.yaml}
cd "$(dirname "$0")/.."
accelerate launch --config_file "$ACCELERATE_CONFIG" scripts/distill.py \
    --config sa1b_multiteacher \
    --dataset_dir "$DATASET_DIR" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
