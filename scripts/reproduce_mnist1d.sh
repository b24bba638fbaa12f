#!/usr/bin/env bash
# Reproduce the committed result results/mnist1d-sin/ (issue 14): the paper-sized search of
# search_spaces/mnist1d.yaml (300 outer steps for the trials ASHA keeps, n = 1..8) -> its top trials
# -> validation of pure, std:*, single:k and diverse at 10 seeds under sgd and rmsprop, each network
# holding out a validation split on which every "best" is picked -> Hessian trials -> summary
# (analysis plan: results/plans/mnist1d-sin.md) -> report.
#
#   bash scripts/reproduce_mnist1d.sh [WORK_DIR]
#
# The full run (Ray folders, checkpoints, models) stays in WORK_DIR (default results/.work);
# only the small, reviewable files are copied to results/mnist1d-sin/. About 1-1.5 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
NAME=mnist1d-sin
SPACE=search_spaces/mnist1d.yaml
bash scripts/reproduce_common.sh "$WORK" "$NAME" "$SPACE" scripts/reproduce_mnist1d.sh
