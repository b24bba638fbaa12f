#!/usr/bin/env bash
# The shared body of scripts/reproduce_*_diversity.sh: one diversity study, run from its committed space
# file under its committed analysis plan, then its report, and the reviewable files copied to
# results/NAME/ with run.json.
#
#   bash scripts/reproduce_study_common.sh WORK_DIR NAME SPACE_FILE PLAN_FILE CALLER
#
# Pre-registration: it refuses to start (one line, exit 2) unless the plan, the space file, the power
# script and these scripts are each tracked by git and unchanged from HEAD, and it records HEAD and the plan's commit in
# run.json, so that anyone can check the plan was committed before the run.
#
# Sessions: a study may need more than one session. When WORK_DIR already holds the study, the run
# continues it with --resume (nothing finished runs again); every session is logged in
# WORK_DIR/NAME.sessions.json (its commit, start, end, note) and ends up in run.json: the first as the
# run, the others under `resumes`. It is still the first full run. NOTE="..." adds a note to the session.
#
# For testing the script only: STUDY_TEST_SPACE=FILE and STUDY_TEST_NAME=NAME run another (small) study
# file, which need not be tracked, into STUDY_TEST_RESULTS (default a temporary folder, never results/);
# run.json then says test_run: true and first_full_run: false. PYTHON picks the interpreter
# (default .venv/bin/python).
set -euo pipefail
WORK=$1 NAME=$2 SPACE=$3 PLAN=$4 CALLER=$5
PYTHON=${PYTHON:-.venv/bin/python}
TEST_RUN=false
OUT=results/$NAME
GUARDED=("$PLAN" "$SPACE" "$CALLER" scripts/reproduce_study_common.sh scripts/study_power.py)
if [ -n "${STUDY_TEST_SPACE:-}" ]; then
  TEST_RUN=true
  SPACE=$STUDY_TEST_SPACE NAME=${STUDY_TEST_NAME:-study-test}
  OUT=${STUDY_TEST_RESULTS:-$(mktemp -d)/$NAME}
  GUARDED=("$PLAN" "$CALLER" scripts/reproduce_study_common.sh scripts/study_power.py)
  echo "TEST RUN of the script: $SPACE -> $OUT (not a result)"
fi

for f in "${GUARDED[@]}"; do
  if ! git ls-files --error-unmatch "$f" >/dev/null 2>&1; then
    echo "reproduce: $f is not tracked by git: commit it (the plan, the space file and the scripts) before the run" >&2
    exit 2
  fi
  if ! git diff --quiet HEAD -- "$f"; then
    echo "reproduce: $f differs from the last commit: commit it (or restore it) before the run" >&2
    exit 2
  fi
done
[ -x "$PYTHON" ] || { [ "$PYTHON" = .venv/bin/python ] && bash scripts/setup.sh; }

COMMIT=$(git rev-parse HEAD)
PLAN_COMMIT=$(git log -1 --format=%H -- "$PLAN")
SESSIONS=$WORK/$NAME.sessions.json
mkdir -p "$WORK"
if [ -f "$WORK/$NAME/study.json" ]; then
  COMMAND="dnn-search study --name $NAME --storage $WORK --resume --quiet"
else
  [ -f "$SESSIONS" ] && { echo "reproduce: $SESSIONS exists but $WORK/$NAME/study.json does not: move the old sessions log away" >&2; exit 2; }
  rm -rf "${WORK:?}/$NAME"
  COMMAND="dnn-search study --space $SPACE --name $NAME --storage $WORK --quiet"
fi

# one entry per session: written before the study starts (end null: a session that was killed keeps it)
session() {
  "$PYTHON" - "$SESSIONS" "$@" <<'PY'
import json, os, sys, time
path, action = sys.argv[1], sys.argv[2]
log = json.load(open(path)) if os.path.exists(path) else []
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
if action == "start":
    command, commit, plan_commit, note = sys.argv[3:]
    log.append({"command": command, "commit": commit, "plan_commit": plan_commit, "start": now, "end": None,
                "note": note})
else:
    stages_file = sys.argv[3]
    log[-1]["end"] = now
    if os.path.exists(stages_file):
        log[-1]["stage_seconds"] = {k: round(v, 1) for k, v in json.load(open(stages_file)).items()}
tmp = path + ".tmp"
json.dump(log, open(tmp, "w"), indent=2)
os.replace(tmp, path)
PY
}

session start "$COMMAND" "$COMMIT" "$PLAN_COMMIT" "${NOTE:-}"
start=$(date +%s)
rm -f "$WORK/$NAME/stages.json"
"$PYTHON" -m dnn_search ${COMMAND#dnn-search }
study_end=$(date +%s)
"$PYTHON" -m dnn_search report "$WORK/$NAME"
end=$(date +%s)
session end "$WORK/$NAME/stages.json"

# the reviewable files: the tables, the summary, the report and its figures, each replicate's learned
# activations and record (not the checkpoints, Ray's folders or the networks)
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
for f in "$WORK/$NAME"/*.parquet "$WORK/$NAME"/*.md "$WORK/$NAME"/*.json "$WORK/$NAME"/report.html "$WORK/$NAME"/split.npz; do
  [ -f "$f" ] && cp "$f" "$OUT.tmp/"
done
[ -d "$WORK/$NAME/report_figures" ] && cp -r "$WORK/$NAME/report_figures" "$OUT.tmp/"
DEST=$(cd "$OUT.tmp" && pwd)
if [ -d "$WORK/$NAME/replicates" ]; then
  (cd "$WORK/$NAME" && find replicates -maxdepth 2 -type f \( -name '*.npz' -o -name '*.json' -o -name '*.txt' -o -name '*.png' \) \
     ! -name 'indices.npz' -print0 | xargs -0 -r cp --parents -t "$DEST")
fi
"$PYTHON" - "$OUT.tmp" "$SESSIONS" "$((end - start))" "$((end - study_end))" "$CALLER" "$SPACE" "$PLAN" "$TEST_RUN" <<'PY'
import json, os, platform, sys
import numpy, optuna, ray, torch
import dnn_search
out, sessions_file, wall, report_s, caller, space, plan, test_run = sys.argv[1:]
sessions = json.load(open(sessions_file))
first, rest = sessions[0], sessions[1:]
stages = json.load(open(f"{out}/stages.json")) if os.path.exists(f"{out}/stages.json") else {}
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
info = {"command": first["command"], "script": caller, "space": space, "plan": plan,
        "commit": first["commit"], "plan_commit": first["plan_commit"],
        "start": first["start"], "end": sessions[-1]["end"],
        "wall_seconds_last_session": int(wall),
        "stage_seconds_last_session": {**{k: round(v, 1) for k, v in stages.items()}, "report_seconds": int(report_s)},
        # each stage summed over the sessions that ran it (a resumed stage continues where it stopped)
        "stage_seconds_total": {k: round(sum((x.get("stage_seconds") or {}).get(k, 0.0) for x in sessions), 1)
                                for k in dict.fromkeys(k for x in sessions for k in (x.get("stage_seconds") or {}))},
        "sessions": sessions,
        "resumes": [{"commit": s["commit"], "start": s["start"], "end": s["end"], "note": s["note"],
                     "stage_seconds": s.get("stage_seconds")} for s in rest],
        "first_full_run": test_run != "true", "other_runs": [], "test_run": test_run == "true",
        "versions": {"dnn_search": dnn_search.__version__, "torch": torch.__version__, "ray": ray.__version__,
                     "optuna": optuna.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
        "machine": f"{cpu}, {os.cpu_count()} CPUs, torch threads per trial 1"}
with open(f"{out}/run.json", "w") as fh:
    json.dump(info, fh, indent=2)
    fh.write("\n")
PY
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
echo "result in $OUT (this session: $((end - start)) s; sessions: $SESSIONS)"
