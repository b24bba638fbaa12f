#!/usr/bin/env bash
# Check the meta-learning fast path on a CUDA machine, and print one table.
#
# Why: the CI and the development machines have no GPU. On CUDA the native C++ kernels do not
# apply (they are CPU-only); the fast path then runs the torch.compile'd (or eager) tile kernels
# and the same hand-derived inner step. This script checks, on the GPU:
#   1. fast == reference in float64 on a tiny problem (1e-4 relative, every meta-gradient element);
#   2. fast == reference in float32 at the paper defaults (H=200, Ho=50, n=2, noise 0), 1e-4 relative;
#   3. the time of one outer step at the defaults, fast and reference;
#   4. a 4-trial smoke search sharing one GPU (--gpus-per-trial 0.25 --max-concurrent 4).
# Without CUDA it exits 1 with one line. Usage (from anywhere; PYTHON defaults to python):
#   scripts/gpu_check.sh            # results of the search go to a temporary folder, removed after
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is false): nothing checked"
    exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ROWS="$TMP/rows.txt"

"$PY" - "$ROWS" <<'EOF'
import sys, time
import torch
from dnn_search.data import load_dataset, split_validation
from dnn_search.metalearn import MetaConfig, MetaLearner

rows = open(sys.argv[1], "w")
device = "cuda"


def meta_gradient(impl, data, dtype, **sizes):
    learner = MetaLearner(MetaConfig(impl=impl, **sizes), *data, device=device, dtype=dtype)
    loss, grads, _, _ = learner.meta_gradient()
    return loss, {k: v.detach().double().cpu() for k, v in grads.items()}


def worst_relative(ref, fast):
    (loss_ref, g_ref), (loss_fast, g_fast) = ref, fast
    worst = abs(loss_fast - loss_ref) / abs(loss_ref)
    for k, g in g_ref.items():
        scale = g.abs().max()
        worst = max(worst, float(((g_fast[k] - g).abs() / (g.abs() + 1e-3 * scale)).max()))
    return worst


def row(check, ok, detail):
    rows.write(f"| {check} | {'ok' if ok else 'FAILED'} | {detail} |\n")
    rows.flush()


g = torch.Generator().manual_seed(0)
x = torch.randn(90, 7, generator=g, dtype=torch.float64)
y = torch.randint(0, 4, (90,), generator=g)
tiny = (x, y, x[:30], y[:30], 4)
sizes = dict(n_activations=3, inner_hidden_size=14, outer_hidden_size=6, inner_batch_size=40, epochs=2)
err = worst_relative(meta_gradient("reference", tiny, torch.float64, **sizes),
                     meta_gradient("fast", tiny, torch.float64, **sizes))
row("float64 tiny: fast vs reference", err <= 1e-4, f"max relative error {err:.2e} (bound 1e-4)")

data = load_dataset("MNIST1D")
split = (*split_validation(data.x_train, data.y_train, 0.1, 0), data.num_classes)
# noise off, as in tests/test_metalearn.py: with it float32 rounding alone reaches ~1e-4
err = worst_relative(meta_gradient("reference", split, torch.float32, n_activations=2, noise=0.0),
                     meta_gradient("fast", split, torch.float32, n_activations=2, noise=0.0))
row("float32 defaults n=2: fast vs reference", err <= 1e-4, f"max relative error {err:.2e} (bound 1e-4)")

for impl in ("fast", "reference"):
    learner = MetaLearner(MetaConfig(impl=impl, n_activations=2), *split, device=device)
    learner.step()  # warm-up (compilation)
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        learner.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    times.sort()
    row(f"outer step at defaults n=2, {impl}", True,
        f"median {times[1]:.3f} s ({torch.cuda.get_device_name()}, peak "
        f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB)")
EOF
status=$?

started=$(date +%s)
"$PY" -m dnn_search search --space search_spaces/smoke.yaml --name gpucheck --num-samples 4 \
    --gpus-per-trial 0.25 --max-concurrent 4 --storage "$TMP" > "$TMP/search.log" 2>&1
search_status=$?
elapsed=$(( $(date +%s) - started ))
trials=$("$PY" -c 'import sys, pandas; print(len(pandas.read_parquet(sys.argv[1])))' \
         "$TMP/gpucheck/trials.parquet" 2>/dev/null || echo "?")
if [ $search_status -eq 0 ]; then verdict=ok; else verdict=FAILED; fi
echo "| 4-trial smoke search, --gpus-per-trial 0.25 | $verdict | exit $search_status, ${elapsed} s, trials recorded: $trials |" >> "$ROWS"

echo "| check | result | detail |"
echo "|---|---|---|"
cat "$ROWS"
if [ $search_status -ne 0 ]; then tail -n 20 "$TMP/search.log"; fi
[ $status -eq 0 ] && [ $search_status -eq 0 ] && ! grep -q FAILED "$ROWS"
