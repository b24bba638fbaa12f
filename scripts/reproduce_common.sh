#!/usr/bin/env bash
# The shared body of scripts/reproduce_*.sh: run one pipeline from a space file, then the report,
# and copy the reviewable files to results/NAME/ with run.json (command, each stage's wall time,
# versions, machine).
#
#   bash scripts/reproduce_common.sh WORK_DIR NAME SPACE_FILE CALLER
set -euo pipefail
WORK=$1 NAME=$2 SPACE=$3 CALLER=$4
OUT=results/$NAME
BIN=.venv/bin
[ -x $BIN/dnn-search ] || bash scripts/setup.sh
COMMAND="dnn-search pipeline --space $SPACE --name $NAME --storage $WORK --quiet"
rm -rf "${WORK:?}/$NAME"
start=$(date +%s)
$BIN/$COMMAND
pipeline_end=$(date +%s)
$BIN/dnn-search report "$WORK/$NAME"
end=$(date +%s)

rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
for f in summary.md trials.parquet steps.parquet validation.parquet hessian.parquet search.json report.html stages.json; do
  [ -f "$WORK/$NAME/$f" ] && cp "$WORK/$NAME/$f" "$OUT.tmp/"
done
cp -r "$WORK/$NAME/report_figures" "$OUT.tmp/"
cp -r "$WORK/$NAME/activations" "$OUT.tmp/"
$BIN/python - "$OUT.tmp" "$((end - start))" "$((end - pipeline_end))" "$COMMAND" "$CALLER" "$SPACE" <<'PY'
import json, os, platform, sys
import numpy, optuna, ray, torch
import dnn_search
out, wall, report_s, command, caller, space = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
stages = json.load(open(f"{out}/stages.json")) if os.path.exists(f"{out}/stages.json") else {}
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
info = {"command": command, "script": caller, "space": space, "wall_seconds": wall,
        "stage_seconds": {**{k: round(v, 1) for k, v in stages.items()}, "report_seconds": report_s},
        "first_full_run": True, "other_runs": [],
        "versions": {"dnn_search": dnn_search.__version__, "torch": torch.__version__, "ray": ray.__version__,
                     "optuna": optuna.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
        "machine": f"{cpu}, {os.cpu_count()} CPUs, torch threads per trial 1"}
with open(f"{out}/run.json", "w") as fh:
    json.dump(info, fh, indent=2)
PY
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "result in $OUT (wall time $((end - start)) s)"
