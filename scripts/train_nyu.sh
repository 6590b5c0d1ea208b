#!/usr/bin/env bash
# NYU Depth V2 recipe of the seed notes (Large -> Base, DenseDepth CSV layout, teacher checkpoint optional).
#   DATASET_DIR=data/nyu OUTPUT_DIR=output/nyu_depth_training \
#   TEACHER_CHECKPOINT=checkpoints/large/depth_anything_v2_vitl.pth ./scripts/train_nyu.sh
# Extra flags go to scripts/distill.py; add --preflight to check everything and train one step before the run.
set -euo pipefail
DATASET_DIR=${DATASET_DIR:-data/nyu}
OUTPUT_DIR=${OUTPUT_DIR:-output/nyu_depth_training}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/single_gpu.yaml}
cd "$(dirname "$0")/.."
EXTRA=()
if [ -n "${TEACHER_CHECKPOINT:-}" ]; then
    EXTRA+=(--teacher_checkpoints "$TEACHER_CHECKPOINT")
fi
accelerate launch --config_file "$ACCELERATE_CONFIG" scripts/distill.py \
    --config nyu \
    --dataset_dir "$DATASET_DIR" \
    --output_dir "$OUTPUT_DIR" \
    "${EXTRA[@]}" "$@"
