#!/usr/bin/env bash
# Everything that depends on a stage-1 model, redone for the models just replaced in the zoo
# (after `python scripts/zoo_add.py NEW.pt --name q3 --quality 3 ...`):
#
#   bash scripts/zoo_refresh.sh q3 q6
#
# 1. calibrate them and measure their quantizer settings (scripts/calibrate_zoo.sh);
# 2. stage 2 again for those of q1-q5 (their qN-sq and qN-tcq files are deltas of the old
#    weights): finetune, bundle, calibrate (benchmarks/stage2.sh, runs in $RUNS);
# 3. Kodak again for the replaced models only, the other points kept
#    (benchmarks/kodak_rd.py --only, benchmarks/stage2.sh --eval-zoo BASES), then the
#    BD-rate tables and plots (printed; copy them into docs/results.md and README.md); a new q0
#    or q1 (hence q1-tcq) also rewrites its golden streams of tests/test_golden.py
#    (scripts/make_golden.py --replace).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUNS=${RUNS:-runs/refresh}
[ $# -gt 0 ] || { echo "usage: bash scripts/zoo_refresh.sh NAME [NAME ...]" >&2; exit 2; }
bases=()
for m in "$@"; do
  case "$m" in
    q1|q2|q3|q4|q5) bases+=("$m") ;;
    q0|q6) ;;
    *) echo "error: $m is not a stage-1 model of the zoo (q0-q6)" >&2; exit 2 ;;
  esac
done
# CALIBRATED=1: step 1 is done already (a refresh that stopped later goes on from step 2)
[ "${CALIBRATED:-0}" = 1 ] || bash scripts/calibrate_zoo.sh "$@"
if [ ${#bases[@]} -gt 0 ]; then
  for m in "${bases[@]}"; do  # old runs would finetune the old weights
    for q in sq tcq; do
      [ ! -f "$RUNS/s2_${m}_$q/model.pt" ] || [ "$RUNS/s2_${m}_$q/model.pt" -nt \
        "training/zoo/$m/model.pt" ] || rm -rf "$RUNS/s2_${m}_$q"
    done
  done
  for m in "${bases[@]}"; do
    for q in sq tcq; do
      [ -f "$RUNS/s2_${m}_$q/model.pt" ] || echo "$m $q decoder,hyper-decoder"
    done
  done | xargs -r -P 2 -L 1 bash benchmarks/stage2.sh "$RUNS" --one
  bash benchmarks/stage2.sh "$RUNS" --bundle "${bases[@]}"
fi
for m in "$@"; do  # the golden streams are of q0 and of q1-tcq (redone with q1)
  case "$m" in
    q0) $BIN/python scripts/make_golden.py --replace q0 ;;
    q1) $BIN/python scripts/make_golden.py --replace q1-tcq ;;
  esac
done
names=$(IFS=,; echo "$*")
$BIN/python benchmarks/kodak_rd.py --out results/kodak --only "$names"
if [ ${#bases[@]} -gt 0 ]; then
  bash benchmarks/stage2.sh --eval-zoo "${bases[@]}"
else
  bash benchmarks/stage2.sh --summary
fi
