#!/usr/bin/env bash
# Stage 2 for the zoo: finetune every stage-1 model for sq and for tcq (decoder and
# hyper-decoder, 500 steps of 256² crops), two runs at a time (one per core), evaluate each on
# Kodak with the quantizer it was finetuned for, and print BD-rates against stage 1.
#
#   bash benchmarks/stage2.sh [RUNS_DIR] [--eval-only]
#   bash benchmarks/stage2.sh RUNS_DIR --bundle [q3 ...]  # put the finetuned models into the zoo
#   bash benchmarks/stage2.sh --eval-zoo [q3 ...]   # evaluate the bundled stage-2 models (of
#                                                   # these bases only: their points replaced)
#   bash benchmarks/stage2.sh RUNS_DIR --one q3 sq decoder,hyper-decoder   # one run
#   bash benchmarks/stage2.sh --summary             # BD-rates and plot from the results files
#
# Writes results/kodak/qaft-stage2-{sq,tcq}.json; the finetuned models stay in RUNS_DIR
# (scripts/zoo_add.py bundles them).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
BIN=.venv/bin
STEPS=${STEPS:-500}
LR=${LR:-1e-4}
CROP=${CROP:-256}
finetune() {  # model quantizer parts
  OMP_NUM_THREADS=1 $BIN/qaft finetune --ckpt training/zoo/$1/model.pt \
    --data ../shared/data/train --quantizer "$2" --parts "$3" --out "$RUNS/s2_$1_$2" \
    --steps "$STEPS" --lr "$LR" --crop "$CROP" --threads 1 --log-every 50 --ckpt-every 100 \
    $( [ -f "$RUNS/s2_$1_$2/last.pt" ] && echo --resume )
}
if [ "${2:-}" = "--bundle" ]; then  # as q1-sq ... q5-tcq, stored as deltas of q1 ... q5
  bases=("${@:3}")
  [ ${#bases[@]} -gt 0 ] || bases=(q1 q2 q3 q4 q5)
  for m in "${bases[@]}"; do
    for q in sq tcq; do
      $BIN/python scripts/zoo_add.py "$RUNS/s2_${m}_$q/model.pt" --name "$m-$q" \
        --quality "${m#q}" --base "$m" --run "$RUNS/s2_${m}_$q"
    done
  done
  # finetuning the hyper-decoder dropped the stage-1 calibration: fit the new one
  bash scripts/calibrate_zoo.sh $(for m in "${bases[@]}"; do echo "$m-sq $m-tcq"; done)
  exit
fi
if [ "${1:-}" = "--summary" ]; then  # the BD-rates and plot from the results files
  RUNS=
elif [ "${1:-}" = "--eval-zoo" ]; then
  bases=("${@:2}")
  update=--update
  [ ${#bases[@]} -gt 0 ] || { bases=(q1 q2 q3 q4 q5); update=; }
  for q in sq tcq; do
    $BIN/qaft eval $(for m in "${bases[@]}"; do echo --model "$m-$q"; done) $update \
      --quantizer $q --name "qaft stage 2 (for $q), $q" --json results/kodak/qaft-stage2-$q.json
  done
  RUNS=
fi
if [ "${2:-}" = "--one" ]; then  # one run: RUNS --one MODEL QUANTIZER PARTS
  finetune "$3" "$4" "$5"
  exit
fi
if [ -n "$RUNS" ] && [ "${2:-}" != "--eval-only" ]; then  # two runs at a time, one per core
  for m in q1 q2 q3 q4 q5; do
    [ -f "$RUNS/s2_${m}_sq/model.pt" ] || echo "$m sq decoder,hyper-decoder"
    [ -f "$RUNS/s2_${m}_tcq/model.pt" ] || echo "$m tcq decoder,hyper-decoder"
  done | xargs -P 2 -L 1 bash "$SELF" "$RUNS" --one
fi
for q in sq tcq; do
  [ -n "$RUNS" ] || break
  $BIN/qaft eval $(for m in q1 q2 q3 q4 q5; do echo --ckpt "$RUNS/s2_${m}_$q/model.pt"; done) \
    --quantizer $q --name "qaft stage 2 (for $q), $q" --json results/kodak/qaft-stage2-$q.json
done
summary() {
  local R=results/kodak S1=q1,q2,q3,q4,q5
  echo "stage 2 vs stage 1 (q1-q5), each with its quantizer:"
  $BIN/qaft bdrate --anchor-models $S1 $R/qaft-stage1-sq.json $R/qaft-stage2-sq.json
  $BIN/qaft bdrate --anchor-models $S1 $R/qaft-stage1-tcq.json $R/qaft-stage2-tcq.json
  echo "all against stage 1 with sq:"
  $BIN/qaft bdrate $R/qaft-stage1-sq.json $R/qaft-stage1-tcq.json
  $BIN/qaft bdrate --anchor-models $S1 $R/qaft-stage1-sq.json $R/qaft-stage2-sq.json
  $BIN/qaft bdrate --anchor-models $S1 $R/qaft-stage1-sq.json $R/qaft-stage2-tcq.json
  echo "stage 2 for tcq against stage 2 for sq:"
  $BIN/qaft bdrate $R/qaft-stage2-sq.json $R/qaft-stage2-tcq.json
  echo "against the anchors:"
  for a in webp jpeg compressai-mbt2018-mean; do
    for c in stage1-sq stage1-tcq stage2-sq stage2-tcq; do
      $BIN/qaft bdrate $R/$a.json $R/qaft-$c.json
    done
  done
  $BIN/qaft plot $R/webp.json $R/qaft-stage1-sq.json $R/qaft-stage1-tcq.json \
    $R/qaft-stage2-sq.json $R/qaft-stage2-tcq.json --out $R/stage2.png --title "Kodak: stage 1 and 2"
}
summary
