#!/usr/bin/env bash
# Start a Ray worker node and join it to the head.
#
#   scripts/cluster/start_worker.sh HEAD_IP:PORT [--num-cpus N] [--num-gpus G]
#
# CPUs and GPUs default to what Ray detects on this machine. Trials ask for
# --cpus-per-trial / --gpus-per-trial (fractional GPUs: 0.25 packs four small trials on a GPU).
# SHARED STORAGE: mount the results folder at the same path as on the head before starting.
# The worker also needs the same Python environment (pip install -e . of this repository).
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then sed -n '2,10p' "$0"; exit 2; fi
HEAD="$1"; shift
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --num-cpus) EXTRA+=(--num-cpus="$2"); shift 2 ;;
    --num-gpus) EXTRA+=(--num-gpus="$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export RAY_USAGE_STATS_ENABLED=0
ray start --address="$HEAD" --disable-usage-stats "${EXTRA[@]}"
echo "worker joined $HEAD; check with: ray status --address $HEAD"
