"""Drive Debian's headless Chromium from tests: the DOM after JavaScript ran, and screenshots.

Install: `apt-get update && apt-get install -y chromium` (`scripts/setup.sh --test` does). Tests that
need it call `require_chromium()`: without Chromium they skip, unless DNN_SEARCH_REQUIRE_BROWSER=1
(set by `.ci/run` and the README's test command), where they fail.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


REQUIRE_VARIABLE = "DNN_SEARCH_REQUIRE_BROWSER"


# written by `scripts/setup.sh --test`, which installs Chromium: its absence is then a failure
TEST_SETUP_MARKER = Path(sys.prefix) / ".dnn_search_test_setup"


def require_chromium() -> str:
    """The Chromium binary; else fail the calling test under DNN_SEARCH_REQUIRE_BROWSER=1, skip it otherwise."""
    import pytest
    binary = chromium_binary()
    if binary is not None:
        return binary
    reason = "chromium not installed (apt-get install -y chromium, or scripts/setup.sh --test)"
    if os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE} is set: the browser tests must run", pytrace=False)
    if TEST_SETUP_MARKER.is_file():
        pytest.fail(f"{reason}, and this environment was made by `scripts/setup.sh --test` ({TEST_SETUP_MARKER}): "
                    "the browser tests must run", pytrace=False)
    pytest.skip(reason)


def _run(args: list[str], url: str, budget_ms: int, timeout: float) -> subprocess.CompletedProcess:
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-background-networking", "--disable-sync", "--hide-scrollbars",
               "--mute-audio", f"--user-data-dir={profile}",
               f"--virtual-time-budget={int(budget_ms)}", *args, url]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def dump_dom(url: str, budget_ms: int = 8000, timeout: float = 90.0) -> str:
    """The serialised DOM of `url` after its scripts ran for `budget_ms` of virtual time."""
    return _run(["--dump-dom"], url, budget_ms, timeout).stdout


def visible_text(dom: str) -> str:
    """Rough text content of a DOM dump: tags, styles, scripts and SVG stripped, whitespace collapsed."""
    dom = re.sub(r"<(style|script)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", dom)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def screenshot(url: str, path: str | os.PathLike, width: int = 1400, height: int = 1000,
               budget_ms: int = 8000, timeout: float = 90.0) -> Path:
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={path}", f"--window-size={width},{height}"], url, budget_ms, timeout)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path


def distinct_colours(path: str | os.PathLike) -> int:
    """Number of distinct RGB colours in a PNG (a blank page has one or two)."""
    import matplotlib.image as mpimg
    img = mpimg.imread(os.fspath(path))
    arr = np.asarray(img)[..., :3]
    if arr.dtype != np.uint8:
        arr = np.round(arr * 255).astype(np.uint8)
    rgb = arr.reshape(-1, 3).astype(np.uint32)
    return int(np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).size)


def make_doc_screenshots(docs: str | os.PathLike = "docs", results: str | os.PathLike | None = None) -> list[Path]:
    """docs/dashboard.png and docs/report.png, from `results` (a search folder) or else the test fixture."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from dnn_search.results.dashboard import start_dashboard_process, stop_dashboard
    from dnn_search.results.report import write_report
    docs = Path(docs)
    with tempfile.TemporaryDirectory() as tmp:
        if results is None:
            from fixtures_results import build_results
            results = build_results(tmp, "fixture-search")
        results = Path(results)
        report = write_report(results)
        proc, url = start_dashboard_process(results, port=0)
        try:
            dash = screenshot(f"{url}/studies/0/trials", docs / "dashboard.png", width=1280, height=1120)
        finally:
            stop_dashboard(proc)
        rep = screenshot(report.as_uri(), docs / "report.png", width=1100, height=1300, budget_ms=2000)
    return [dash, rep]


if __name__ == "__main__":
    import sys
    print(*make_doc_screenshots(results=sys.argv[1] if len(sys.argv) > 1 else None), sep="\n")
