#!/usr/bin/env bash
# Start the Ray head node of a dnn-search cluster (run on the machine that drives the search).
#
#   scripts/cluster/start_head.sh [--port 6379] [--num-cpus N] [--num-gpus G] [--trials-on-head]
#
# By default the head offers no CPUs/GPUs to trials (it runs the driver, Ray's control plane and
# Optuna's storage); pass --trials-on-head to let trials run here as well.
#
# SHARED STORAGE: every node must see the results folder at the same path (NFS, Lustre, ...),
# because trials write checkpoints and exported models there. Mount it on all nodes first, then
#   dnn-search search --address auto --storage /shared/path/results --space ... --name ...
set -euo pipefail
PORT=6379
NUM_CPUS=0
NUM_GPUS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --num-cpus) NUM_CPUS="$2"; shift 2 ;;
    --num-gpus) NUM_GPUS="$2"; shift 2 ;;
    --trials-on-head) NUM_CPUS="$(nproc)"; NUM_GPUS="$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export RAY_USAGE_STATS_ENABLED=0
ray start --head --port="$PORT" --num-cpus="$NUM_CPUS" --num-gpus="$NUM_GPUS" \
  --include-dashboard=false --disable-usage-stats
HEAD_IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
cat <<MSG

Head started. On each worker node run:
  scripts/cluster/start_worker.sh ${HEAD_IP:-<head-ip>}:${PORT}
Then, on this node:
  dnn-search search --address auto --storage /shared/path/results --space search_spaces/mnist1d.yaml --name NAME
Stop everything with: ray stop   (on every node)
MSG
