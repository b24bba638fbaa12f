#!/usr/bin/env bash
# Reproduce the committed result results/mnist1d-diversity/ (issue 22): the diversity study of
# search_spaces/study_mnist1d.yaml (n in {1, 2, 4, 8} and matched, every control, primary and secondary protocols), under the analysis plan results/plans/mnist1d-diversity.md,
# both committed before the run (the script refuses to start otherwise, and writes both commits into
# run.json).
#
#   bash scripts/reproduce_mnist1d_diversity.sh [WORK_DIR]      # again after an interruption: it resumes
#
# The full study (Ray folders, checkpoints) stays in WORK_DIR (default results/.work); the reviewable
# files are copied to results/mnist1d-diversity/. Run it alone on the cores: not beside the other study
# or the test suite (shared cores inflate every cost). Cost: the plan's "Time budget".
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
bash scripts/reproduce_study_common.sh "$WORK" mnist1d-diversity search_spaces/study_mnist1d.yaml \
  results/plans/mnist1d-diversity.md scripts/reproduce_mnist1d_diversity.sh
