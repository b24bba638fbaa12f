#!/usr/bin/env bash
# Reproduce the reference result committed under results/mnist1d-sin/ (issue 6):
# search (sin base, n=1 against n=2) -> best homogeneous and best diverse trial -> 10-seed
# validation of pure / single:k / diverse on MNIST-1D -> Hessian trials -> summary and report.
#
#   bash scripts/reproduce_mnist1d.sh [WORK_DIR]
#
# The full run (Ray folders, checkpoints, models) stays in WORK_DIR (default results/.work);
# only the small, reviewable files are copied to results/mnist1d-sin/.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
NAME=mnist1d-sin
OUT=results/$NAME
BIN=.venv/bin
[ -x $BIN/dnn-search ] || bash scripts/setup.sh
COMMAND="dnn-search pipeline --space search_spaces/mnist1d_reference.yaml --name $NAME --storage $WORK --quiet"
rm -rf "${WORK:?}/$NAME"
start=$(date +%s)
$BIN/$COMMAND
$BIN/dnn-search report "$WORK/$NAME"
wall=$(( $(date +%s) - start ))

rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
cp "$WORK/$NAME"/{summary.md,trials.parquet,steps.parquet,validation.parquet,hessian.parquet,search.json,report.html} "$OUT.tmp/"
cp -r "$WORK/$NAME/report_figures" "$OUT.tmp/"
cp -r "$WORK/$NAME/activations" "$OUT.tmp/"
$BIN/python - "$OUT.tmp" "$wall" "$COMMAND" <<'PY'
import json, platform, sys
import numpy, optuna, ray, torch
import dnn_search
out, wall, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
info = {"command": command, "script": "scripts/reproduce_mnist1d.sh", "wall_seconds": wall,
        "versions": {"dnn_search": dnn_search.__version__, "torch": torch.__version__, "ray": ray.__version__,
                     "optuna": optuna.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, torch threads per trial 1"}
with open(f"{out}/run.json", "w") as fh:
    json.dump(info, fh, indent=2)
PY
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "reference result in $OUT (wall time ${wall} s)"
