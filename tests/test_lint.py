"""Static checks the suite runs (so the README's one test command and .ci/run include them):
ruff's pyflakes rules on the whole package (undefined names, unused imports, closures over deleted
names: bugs a test may never reach), and mypy on the typed layers: the results layer, the
statistics, the value types and the public API's facade."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MYPY_TARGETS = ["dnn_search/results/", "dnn_search/stats.py", "dnn_search/study_stats.py", "dnn_search/modes.py",
                "dnn_search/metrics.py", "dnn_search/__init__.py"]


def _tool(module: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "MYPY_CACHE_DIR": str(tmp / "mypy"),
                                            "RUFF_CACHE_DIR": str(tmp / "ruff")})
    if "No module named" in proc.stderr:
        pytest.fail(f"{module} is not installed: `bash scripts/setup.sh --test` installs it")
    return proc


def test_ruff_pyflakes_rules_are_clean(tmp_path):
    proc = _tool("ruff", "check", "--select", "F", "--output-format", "concise", "dnn_search", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_mypy_is_clean_on_the_typed_layers(tmp_path):
    proc = _tool("mypy", *MYPY_TARGETS, tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
