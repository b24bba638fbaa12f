#!/usr/bin/env bash
# Reproduce the committed result results/henonheiles-sin/ (issue 11): the Hénon–Heiles HNN search
# of search_spaces/henonheiles.yaml (n in {1, 2}, exact second-order meta-gradient) -> the best trial
# per n -> validation of pure, smooth std:*, single:k and diverse at 10 seeds under sgd and rmsprop,
# picks on whole held-out training trajectories -> Hessian trials -> summary on log MSE (analysis
# plan: results/plans/henonheiles-sin.md) -> report with the forecast figure.
#
#   bash scripts/reproduce_henonheiles.sh [WORK_DIR]
#
# The full run (Ray folders, checkpoints, models) stays in WORK_DIR (default results/.work);
# only the small, reviewable files are copied to results/henonheiles-sin/. About 1 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-results/.work}
NAME=henonheiles-sin
SPACE=search_spaces/henonheiles.yaml
bash scripts/reproduce_common.sh "$WORK" "$NAME" "$SPACE" scripts/reproduce_henonheiles.sh
