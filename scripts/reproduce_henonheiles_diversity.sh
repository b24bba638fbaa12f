#!/usr/bin/env bash
# Reproduce the committed result results/henonheiles-diversity/ (issue 22): the diversity study of
# search_spaces/study_henonheiles.yaml (n in {1, 2}, copies, mix, random, the forecast table), under the analysis plan results/plans/henonheiles-diversity.md,
# both committed before the run (the script refuses to start otherwise, and writes both commits into
# run.json).
#
#   bash scripts/reproduce_henonheiles_diversity.sh [WORK_DIR]      # again after an interruption: it resumes
#
# The full study (Ray folders, checkpoints) stays in WORK_DIR (default results/.work); the reviewable
# files are copied to results/henonheiles-diversity/. Run it alone on the cores: not beside the other study
# or the test suite (shared cores inflate every cost). Cost: the plan's "Time budget".
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
bash scripts/reproduce_study_common.sh "$WORK" henonheiles-diversity search_spaces/study_henonheiles.yaml \
  results/plans/henonheiles-diversity.md scripts/reproduce_henonheiles_diversity.sh
