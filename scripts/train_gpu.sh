#!/usr/bin/env bash
# Train the default model on one GPU in about 10 minutes, then evaluate it: the prepared run for
# a lent GPU. Reads ../shared/data/dawnlike16; writes the run folder (weights, config, card,
# samples, loss.csv, eval.json) to $OUT/sprites16 ($OUT defaults to runs/gpu).
#
#   OUT=runs/gpu MINUTES=9 bash scripts/train_gpu.sh
#
# It continues the shipped weights (--init), as every training of the default model does; the
# card counts the steps of all runs, and the run keeps the shipped sampling defaults, so its
# eval.json compares with weights/sprites16/eval.json (diffusion.evaluate.compare). Natural label
# frequencies (--balance 0): a long run that draws the 110 food sprites more often memorises
# them. Set INIT= to start from scratch, EPOCHS to change the length of the cosine schedule
# (--max-minutes stops earlier if the GPU is slower than planned).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-9}
EPOCHS=${EPOCHS:-1500}
INIT=${INIT-weights/sprites16}
DATA=${DATA:-../shared/data/dawnlike16}
PY=${PYTHON:-python}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p "$OUT"
$PY -m diffusion.train --data "$DATA" --split train --alpha ${INIT:+--init "$INIT"} \
  --out "$OUT/sprites16" --epochs "$EPOCHS" --max-minutes "$MINUTES" --lr 3e-4 --balance 0 \
  --prediction v --min-snr 5 --guidance 2.0 --amp on --compile on --sample-every 100000 \
  2>&1 | tee "$OUT/train.log"
$PY -m diffusion.evaluate "$OUT/sprites16" --data "$DATA" --palette data,raw \
  --json "$OUT/sprites16/eval.json" \
  2>&1 | tee "$OUT/eval.log"
$PY -m diffusion.card "$OUT/sprites16"
