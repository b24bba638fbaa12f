"""Record (or re-record) the golden outputs that tests/test_golden.py holds the code to, bit for bit.

    PYTHONPATH=. python scripts/make_golden.py            # everything
    PYTHONPATH=. python scripts/make_golden.py fast       # only the fast-path meta-learning goldens

Why goldens: refactors of the science layer (the task seam, registries) must not change a single bit
of what the tool computes for classification. Each output is written by the code's own writers
(`jobs.metalearn`, `jobs.validate`, `jobs.hessian`), so the files are exactly what a user gets.
The fast path's bits legitimately change when its kernels are rewritten for speed: its goldens live
in their own folder (`metalearn_fast`) so they can be re-recorded alone after such a change, while
the reference-path, validation and Hessian goldens stay fixed.

Everything runs in float32, eager (DNN_SEARCH_COMPILE=0) and single-threaded so that a rerun on the
same torch build reproduces the bits. Goldens live in `tests/golden/<machine key>/` (`machine_key()`):
the bits are the same only on the same kind of CPU, so a new kind gets its own set, recorded from a
commit whose outputs are trusted (checked out in a worktree), never from the code under test.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path



def machine_key() -> str:
    """The kind of CPU goldens are recorded on: vendor and widest vector instruction set. Bit-equality
    holds only on the same kind (torch's BLAS and vector kernels pick different code paths on an AMD
    and an Intel CPU with the same AVX-512 flags), so each kind has its own set."""
    import platform
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    vendor = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("vendor_id")),
                  platform.machine() or "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    isa = next((name for name in ("avx512f", "avx2") if name in flags), "base").replace("avx512f", "avx512")
    return f"{vendor}-{isa}"


GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / machine_key()

# Small enough to run in seconds, varied enough to cover each base, the noise branch, uneven blocks
# (16 neurons in 3 blocks) and an outer batch of two classifiers.
CONFIGS = {
    "n1_sin": dict(activation="sin", n_activations=1, noise=0.0, outer_batch_size=1),
    "n2_tanh_noise": dict(activation="tanh", n_activations=2, noise=0.1, outer_batch_size=1),
    "n3_elu_ob2": dict(activation="elu", n_activations=3, noise=0.1, outer_batch_size=2),
}
COMMON = dict(dataset="MNIST1D", inner_hidden_size=16, outer_hidden_size=8, inner_batch_size=200,
              epochs=1, steps=3, seed=0, val_fraction=0.1)
VALIDATE_SOURCE = ("metalearn_reference", "n2_tanh_noise")
VALIDATE_ARGS = dict(validation_mode="all", runs=1, seed=0, epochs=1, hidden_size=32)
HESSIAN_MODEL = "MNIST1D_diverse_seed0.pt"
HESSIAN_ARGS = dict(num_samples=200, top_k=2, iters=8, seed=0)


def _deterministic():
    os.environ["DNN_SEARCH_COMPILE"] = "0"
    import torch
    torch.set_num_threads(1)


def metalearn(impl: str, name: str, out: Path) -> Path:
    from dnn_search import jobs
    from dnn_search.metalearn import MetaConfig
    _deterministic()
    cfg = MetaConfig(**COMMON, **CONFIGS[name], impl=impl)
    folder = out / f"metalearn_{impl}" / name
    jobs.metalearn(cfg, runs=1, data_path=None, output_folder=folder, save_curve=True, save_model=True)
    return folder


def validate(source_root: Path, out: Path) -> Path:
    from dnn_search import jobs
    _deterministic()
    npz = next((source_root / VALIDATE_SOURCE[0] / VALIDATE_SOURCE[1]).glob("*.npz"))
    folder = out / "validate"
    jobs.validate(npz, output_folder=folder, save_model=True, save_curve=True, quiet=True, **VALIDATE_ARGS)
    return folder


def hessian(source_root: Path, out: Path) -> Path:
    from dnn_search import jobs
    _deterministic()
    folder = out / "hessian"
    jobs.hessian(source_root / "validate" / "models" / HESSIAN_MODEL, output_folder=folder, quiet=True,
                 **HESSIAN_ARGS)
    for png in folder.glob("*.png"):
        png.unlink()  # a figure, not a number: not part of the golden
    return folder


def main(argv: list[str]) -> None:
    which = argv[0] if argv else "all"
    if which not in ("all", "fast", "validate"):
        raise SystemExit("usage: make_golden.py [all|fast|validate]  (validate: only the validate and hessian goldens)")
    impls = {"fast": ["fast"], "validate": []}.get(which, ["reference", "fast"])
    for impl in impls:
        shutil.rmtree(GOLDEN / f"metalearn_{impl}", ignore_errors=True)
        for name in CONFIGS:
            metalearn(impl, name, GOLDEN)
    if which in ("all", "validate"):
        for sub in ("validate", "hessian"):
            shutil.rmtree(GOLDEN / sub, ignore_errors=True)
        validate(GOLDEN, GOLDEN)
        hessian(GOLDEN, GOLDEN)
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main(sys.argv[1:])
