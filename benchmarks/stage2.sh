#!/usr/bin/env bash
# Stage 2 for the zoo: finetune every stage-1 model's decoder for sq and for tcq, evaluate
# each on Kodak with the quantizer it was finetuned for, and print BD-rates against stage 1.
#
#   bash benchmarks/stage2.sh [RUNS_DIR] [--eval-only]
#
# Writes results/kodak/qaft-stage2-{sq,tcq}.json; the finetuned models stay in RUNS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
BIN=.venv/bin
STEPS=${STEPS:-600}
if [ "${2:-}" != "--eval-only" ]; then
  for q in sq tcq; do
    for m in q1 q2 q3 q4 q5; do
      OMP_NUM_THREADS=1 $BIN/qaft finetune --ckpt training/zoo/$m/model.pt \
        --data ../shared/data/train --quantizer $q --parts decoder --out "$RUNS/s2_${m}_$q" \
        --steps "$STEPS" --lr 5e-5 --threads 1 --log-every 50 --ckpt-every 300
    done
  done
fi
for q in sq tcq; do
  $BIN/qaft eval $(for m in q1 q2 q3 q4 q5; do echo --ckpt "$RUNS/s2_${m}_$q/model.pt"; done) \
    --quantizer $q --name "qaft stage 2 (for $q), $q" --json results/kodak/qaft-stage2-$q.json
done
echo "stage 2 vs stage 1, each with its quantizer:"
$BIN/qaft bdrate results/kodak/qaft-stage1-sq.json results/kodak/qaft-stage2-sq.json
$BIN/qaft bdrate results/kodak/qaft-stage1-tcq.json results/kodak/qaft-stage2-tcq.json
echo "all against stage 1 with sq:"
$BIN/qaft bdrate results/kodak/qaft-stage1-sq.json results/kodak/qaft-stage1-tcq.json
$BIN/qaft bdrate results/kodak/qaft-stage1-sq.json results/kodak/qaft-stage2-sq.json
$BIN/qaft bdrate results/kodak/qaft-stage1-sq.json results/kodak/qaft-stage2-tcq.json
