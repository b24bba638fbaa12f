#!/usr/bin/env bash
# Reproduce the committed result results/mnist1d-diversity-2/ (issue 22): the second MNIST-1D diversity
# study, search_spaces/study_mnist1d_2.yaml (the first study's arms, controls and protocols; calibration
# at the replicates' 225 steps and inner lr up to 0.015, a new study seed), under the analysis plan
# results/plans/mnist1d-diversity-2.md, both committed before the run (the script refuses to start
# otherwise, and writes both commits into run.json). Why a second study: the plan's first section.
#
#   bash scripts/reproduce_mnist1d_diversity_2.sh [WORK_DIR]    # again after an interruption: it resumes
#
# The full study (Ray folders, checkpoints) stays in WORK_DIR (default results/.work); the reviewable
# files are copied to results/mnist1d-diversity-2/. Run it alone on the cores: not beside another study
# or the test suite (shared cores inflate every cost). Cost: the plan's "Time budget".
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
bash scripts/reproduce_study_common.sh "$WORK" mnist1d-diversity-2 search_spaces/study_mnist1d_2.yaml \
  results/plans/mnist1d-diversity-2.md scripts/reproduce_mnist1d_diversity_2.sh
