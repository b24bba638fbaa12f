#!/usr/bin/env bash
# Install dnn_search into ./.venv (idempotent).
#
#   scripts/setup.sh                the exact versions of requirements.lock (what the tests pass on)
#   scripts/setup.sh --test         the same, plus the test tools (pytest, hypothesis, psutil) and
#                                   Debian's headless Chromium for the browser tests
#   scripts/setup.sh --newest       the newest versions within setup.cfg's bounds instead of the lock
#   scripts/setup.sh --newest-ray   also lift setup.cfg's Ray bound (<2.61): try a new Ray release.
#                                   dnn_search's Tune patch then warns once and leaves Tune alone.
#
# CPU machines get torch's CPU build (pinned first so nothing pulls a multi-GB CUDA build).
# The native C++ kernels are then compiled once into .venv/dnn_search_kernels (30-50 s; skipped when
# up to date), so that no command compiles before its first step. Without a working compiler setup
# says so once and dnn_search uses its torch kernels; DNN_SEARCH_NATIVE=0 skips the build.
# GPU users: install the torch build for your CUDA into the venv first (see README), and set
# DNN_SEARCH_TORCH=skip to keep it (the lock's torch pin is then left out).
set -euo pipefail
cd "$(dirname "$0")/.."
test_tools="" newest="" newest_ray=""
for arg in "$@"; do
  case "$arg" in
    --test) test_tools=1 ;;
    --newest) newest=1 ;;
    --newest-ray) newest=1; newest_ray=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
quiet() { grep -v -e "is ignored" -e "^$" || true; }
torch_pin=${DNN_SEARCH_TORCH:-2.13.0}
if [ "$torch_pin" != "skip" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" install "torch==${torch_pin}" 2>&1 | quiet
  .venv/bin/python -c "import torch" || { echo "torch install failed" >&2; exit 1; }
fi
constraints=()
if [ -z "$newest" ]; then
  # the lock as pip constraints; without its torch line when the user keeps their own torch
  grep -v -e '^#' requirements.lock | { if [ "$torch_pin" = "2.13.0" ]; then cat; else grep -v '^torch=='; fi; } \
    > .venv/constraints.txt
  constraints=(-c .venv/constraints.txt)
fi
extras=""
if [ -n "$test_tools" ]; then
  extras="[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser tests will fail" >&2
  fi
  touch .venv/.dnn_search_test_setup  # the browser tests fail (not skip) without Chromium here
fi
"${PIP[@]}" install -e ".${extras}" "${constraints[@]}" 2>&1 | quiet
if [ -n "$newest_ray" ]; then
  # pip reports dnn_search's <2.61 requirement as unmet; that is the point of this switch
  "${PIP[@]}" install --upgrade "ray[tune]" 2>&1 | quiet
fi
.venv/bin/python -c "import dnn_search, ray, optuna, pyhessian" || { echo "dnn_search install failed" >&2; exit 1; }
# The native kernels, built into the environment once (python -m dnn_search.native prints one line;
# a failed build is recorded there so that commands use the torch kernels without retrying).
.venv/bin/python -m dnn_search.native --build || echo "setup.sh: continuing without the native kernels" >&2
echo "dnn_search installed in .venv ($(.venv/bin/python -c 'import ray, torch; print("torch", torch.__version__, "ray", ray.__version__)'); $([ -n "$newest" ] && echo "newest versions" || echo "versions of requirements.lock"))"
