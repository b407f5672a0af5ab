#!/usr/bin/env bash
# The paper's setting against the zoo's (issue 30): stage 1 trained from scratch with the
# `noise` stand-in (the paper's) and with `mixed` (the zoo's), everything else equal, at four
# rates; stage 2 on each for sq and tcq, retraining the decoder or the decoder and the
# hyper-decoder; every model calibrated and tuned as the zoo is and evaluated on Kodak with
# real files. Two runs at a time, one thread each; every phase resumes where it stopped.
#
#   bash benchmarks/ablation.sh RUNS_DIR            # everything not yet done, then the table
#   bash benchmarks/ablation.sh RUNS_DIR stage1     # only the stage-1 runs
#   bash benchmarks/ablation.sh RUNS_DIR stage2     # only calibration, tuning and stage 2
#   bash benchmarks/ablation.sh RUNS_DIR eval       # only the Kodak evaluations
#   bash benchmarks/ablation.sh - table             # the table from results/kodak/ablation/
#
# Four rates rather than three because a Bjøntegaard delta needs four points per curve.
# Results: results/kodak/ablation/{noise,mixed}-stage{1,2}-{sq,tcq}[-{decoder,hd}].json, and
# noise-stage2-sq-decoder-crop256.json (one run, at q3's λ, on 256² crops).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
RUNS=${1:?RUNS_DIR}
PHASE=${2:-all}
BIN=${BIN:-.venv/bin}
DATA=${DATA:-../shared/data/train}
KODAK=${KODAK:-../shared/data/kodak}
OUT=results/kodak/ablation
RATES=(q1 q3 q4 q5)
declare -A LMBDA=([q1]=0.0018 [q3]=0.0067 [q4]=0.013 [q5]=0.025)
S1_STEPS=${S1_STEPS:-3000}  # batch 8 of 128² crops, lr 5e-4, drops at 80% and 95%
S2_STEPS=${S2_STEPS:-300}   # a tenth of stage 1's steps, lr 1e-4
export OMP_NUM_THREADS=1

stage1() {  # stand-in rate
  local run=$RUNS/s1_$1_$2
  [ -f "$run/model.pt" ] && return
  if [ -f "$run/last.pt" ]; then
    $BIN/qaft train --resume "$run" --steps "$S1_STEPS" --threads 1
  else
    $BIN/qaft train --data "$DATA" --lmbda "${LMBDA[$2]}" --out "$run" --N 64 --M 96 \
      --stand-in "$1" --steps "$S1_STEPS" --batch 8 --crop 128 --lr 5e-4 --seed 0 \
      --val-every 0 --threads 1 --log-every 100 --ckpt-every 250
  fi
}

prepare() {  # stand-in rate: calibrate and tune the stage-1 model as the zoo's are
  local run=$RUNS/s1_$1_$2
  [ -f "$run/prepared" ] && return
  $BIN/qaft calibrate --ckpt "$run/model.pt" --data "$DATA" --write
  $BIN/qaft tune-quantizer --ckpt "$run/model.pt" --quantizer tcq --data "$DATA" --write
  touch "$run/prepared"
}

stage2() {  # stand-in rate quantizer parts [crop]
  local crop=${5:-128} tag=$4
  [ "$tag" = decoder,hyper-decoder ] && tag=hd
  local run=$RUNS/s2_$1_$2_$3_$tag
  [ "$crop" = 128 ] || run=${run}_crop$crop
  if [ ! -f "$run/model.pt" ]; then
    if [ -f "$run/last.pt" ]; then
      $BIN/qaft finetune --ckpt "$RUNS/s1_$1_$2/model.pt" --resume "$run" --steps "$S2_STEPS" \
        --threads 1
    else
      $BIN/qaft finetune --ckpt "$RUNS/s1_$1_$2/model.pt" --data "$DATA" --quantizer "$3" \
        --parts "$4" --out "$run" --steps "$S2_STEPS" --batch 8 --crop "$crop" --lr 1e-4 \
        --seed 0 --threads 1 --log-every 100 --ckpt-every 100
    fi
  fi
  # retraining the hyper-decoder drops the stage-1 calibration: fit the new one, as the zoo does
  if [ "$tag" = hd ] && [ ! -f "$run/prepared" ]; then
    $BIN/qaft calibrate --ckpt "$run/model.pt" --data "$DATA" --write
    touch "$run/prepared"
  fi
}

evaluate() {  # curve-name: one results file of the four rates
  local name=$1 json=$OUT/$1.json
  [ -f "$json" ] && return
  local si stage q tag ckpts=() rates=("${RATES[@]}")
  IFS=- read -r si stage q tag <<<"$name"
  [[ $tag == *crop* ]] && rates=(q3)  # the one crop-size run
  for r in "${rates[@]}"; do
    if [ "$stage" = stage1 ]; then
      ckpts+=(--ckpt "$RUNS/s1_${si}_$r/model.pt")
    else
      ckpts+=(--ckpt "$RUNS/s2_${si}_${r}_${q}_${tag/-/_}/model.pt")
    fi
  done
  mkdir -p "$OUT"
  $BIN/qaft eval "${ckpts[@]}" --data "$KODAK" --quantizer "$q" \
    --name "$si stand-in, $stage${tag:+ ($tag)}, $q" --json "$json"
}

one() {  # a job line from the lists below
  case $1 in
    stage1) stage1 "$2" "$3" ;;
    prepare) prepare "$2" "$3" ;;
    stage2) stage2 "$2" "$3" "$4" "$5" "${6:-128}" ;;
    eval) OMP_NUM_THREADS=1 evaluate "$2" ;;
  esac
}
if [ "$PHASE" = --one ]; then
  shift 2
  one "$@"
  exit
fi

if [ "$PHASE" = all ] || [ "$PHASE" = stage1 ]; then
  for r in q3 q1 q4 q5; do for s in noise mixed; do echo "stage1 $s $r"; done; done |
    xargs -P 2 -L 1 bash "$SELF" "$RUNS" --one
fi
if [ "$PHASE" = all ] || [ "$PHASE" = stage2 ]; then
  for r in "${RATES[@]}"; do for s in noise mixed; do echo "prepare $s $r"; done; done |
    xargs -P 2 -L 1 bash "$SELF" "$RUNS" --one
  {
    for q in sq tcq; do for p in decoder decoder,hyper-decoder; do
      for r in "${RATES[@]}"; do for s in noise mixed; do echo "stage2 $s $r $q $p"; done; done
    done; done
    # what crop size alone does: one run, the noise model's q3 sq decoder on 256² crops
    echo "stage2 noise q3 sq decoder 256"
  } | xargs -P 2 -L 1 bash "$SELF" "$RUNS" --one
fi
if [ "$PHASE" = all ] || [ "$PHASE" = eval ]; then
  {
    for s in noise mixed; do
      for q in sq tcq; do echo "eval $s-stage1-$q"; done
    done
    for q in sq tcq; do for p in decoder hd; do for s in noise mixed; do
      echo "eval $s-stage2-$q-$p"
    done; done; done
    echo "eval noise-stage2-sq-decoder-crop256"
  } | xargs -P 2 -L 1 bash "$SELF" "$RUNS" --one
fi
if [ "$PHASE" = all ] || [ "$PHASE" = table ]; then
  runs=()
  [ "$RUNS" = - ] || runs=(--runs "$RUNS")
  $BIN/python benchmarks/ablation_table.py "$OUT" "${runs[@]}"
fi
