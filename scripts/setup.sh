#!/usr/bin/env bash
# Install dnn_search into ./.venv (idempotent). `scripts/setup.sh --test` also installs the test
# tools: pytest, hypothesis and Debian's headless Chromium (the dashboard/report browser tests).
#
# CPU machines get torch's CPU build (pinned first so nothing pulls a multi-GB CUDA build).
# GPU users: install the torch build for your CUDA into the venv first (see README), or set
# DNN_SEARCH_TORCH=skip to keep the torch that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if [ "${DNN_SEARCH_TORCH:-}" != "skip" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" install "torch==${DNN_SEARCH_TORCH:-2.13.0}" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import torch" || { echo "torch install failed" >&2; exit 1; }
fi
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser tests will fail under DNN_SEARCH_REQUIRE_BROWSER=1 (.ci/run)" >&2
  fi
fi
"${PIP[@]}" install -e ".${extras}" 2>&1 | grep -v -e "is ignored" -e "^$" || true
.venv/bin/python -c "import dnn_search, ray, optuna, pyhessian" || { echo "dnn_search install failed" >&2; exit 1; }
echo "dnn_search installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
