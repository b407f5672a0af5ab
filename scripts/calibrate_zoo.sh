#!/usr/bin/env bash
# Calibrate the residual densities of bundled models on the training images, re-measure the
# stage-1 models' quantizer settings with the new tables, and re-export their folders.
#
#   bash scripts/calibrate_zoo.sh [NAME ...]     # default: every bundled model
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${DATA:-../shared/data/train}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <($BIN/qaft models --json | $BIN/python -c \
    'import json, sys; print("\n".join(m["name"] for m in json.load(sys.stdin)))')
fi
for m in "${names[@]}"; do
  OMP_NUM_THREADS=2 $BIN/qaft calibrate --model "$m" --data "$DATA" --write
  case "$m" in
    *-sq|*-tcq) ;;  # stage 2 keeps the settings it was finetuned with
    *) OMP_NUM_THREADS=2 $BIN/qaft tune-quantizer --model "$m" --quantizer rdoq \
         --quantizer tcq --quantizer tcq8 --data "$DATA" --images 4 --write ;;
  esac
done
$BIN/python scripts/zoo_add.py --reexport "$@"  # all of them without names
