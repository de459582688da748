#!/usr/bin/env bash
# Continue the 32x32 models on one GPU in about 10 minutes: the pixel model weights/tiles32, the
# latent model weights/tiles32-latent (its autoencoder kept as it is) and the upscaler
# weights/upscale2x, each from its shipped weights (--init), then evaluate the two tile models.
# Reads ../shared/data/dcss32; writes the run folders to $OUT ($OUT defaults to runs/gpu32).
#
#   OUT=runs/gpu32 bash scripts/train_gpu_32.sh
#
# The cards count the steps of all runs; copy a run folder over its weights/ folder only when
# `python -m diffusion.evaluate` says it is better (see docs/bigger.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu32}
DATA=${DATA:-../shared/data/dcss32}
PY=${PYTHON:-python}
COMMON=(--data "$DATA" --split train --alpha --prediction v --min-snr 5 --amp on --compile on
        --sample-every 100000)

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p "$OUT"
$PY -m diffusion.train "${COMMON[@]}" --init weights/tiles32 --channels 32,64,128,128 \
  --epochs 3000 --max-minutes 3.5 --lr 3e-4 --guidance 2.0 --out "$OUT/tiles32" \
  2>&1 | tee "$OUT/tiles32.log"
$PY -m diffusion.train "${COMMON[@]}" --init weights/tiles32-latent \
  --autoencoder weights/tiles32-latent/autoencoder --channels 64,128,128 --epochs 6000 \
  --max-minutes 2 --lr 3e-4 --guidance 2.0 --out "$OUT/tiles32-latent" \
  2>&1 | tee "$OUT/tiles32-latent.log"
$PY -m diffusion.train "${COMMON[@]}" --init weights/upscale2x --upscale --p-uncond 1 \
  --channels 32,64,128,128 --epochs 3000 --max-minutes 2 --lr 3e-4 --out "$OUT/upscale2x" \
  2>&1 | tee "$OUT/upscale2x.log"
for model in tiles32 tiles32-latent; do
  $PY -m diffusion.evaluate "$OUT/$model" --data "$DATA" --n 64 --seeds 0,1 \
    --json "$OUT/$model/eval.json" 2>&1 | tee "$OUT/$model-eval.log"
  $PY -m diffusion.card "$OUT/$model"
done
