"""`dnn-search report`: the self-contained HTML report and its figures, on a real results folder."""
from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402
from conftest import run_cli  # noqa: E402
from fixtures_results import TRIAL_PLAN, build_results  # noqa: E402

from dnn_search import cli  # noqa: E402

NAME = "fixture-search"
ALL_FIGURES = {"top_activations.png", "learning_curves.png", "param_importance.png", "param_scatter.png",
               "parallel_coordinates.png", "validation_accuracy.png", "hessian_density.png"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    folder = build_results(root, NAME, pipeline=True)
    assert cli.main(["report", NAME, "--storage", str(root)]) == 0
    return folder


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 5_000, path
    assert browser.distinct_colours(path) > 20, path


def test_report_files(report, capsys):
    html_path = report / "report.html"
    assert html_path.is_file()
    figures = {p.name for p in (report / "report_figures").glob("*.png")}
    assert figures == ALL_FIGURES
    for name in figures:
        _png_ok(report / "report_figures" / name)


def test_report_is_self_contained(report):
    text = (report / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"(?i)\b(?:https?|ftp)://", text), "external URL in the report"
    assert "<script" not in text.lower() and "<link" not in text.lower()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == len(ALL_FIGURES)
    for src in srcs:  # every embedded image decodes to a PNG
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"


def test_report_content(report):
    text = (report / "report.html").read_text(encoding="utf-8")
    plain = browser.visible_text(text)
    assert f"Search report: {NAME}" in plain
    assert f"{len(TRIAL_PLAN)} trials" in plain
    assert "4 completed" in plain and "2 pruned" in plain and "1 failed" in plain
    assert "PED-ANOVA" in plain  # the importance method is named
    for mode in ("pure", "single:1", "diverse"):
        assert mode in plain
    # validation table: mean ± std per dataset and mode
    val = pd.read_parquet(report / "validation.parquet")
    mean = val[(val.dataset == "MNIST1D") & (val["mode"] == "pure")].test_accuracy.mean()
    assert f"{mean:.4f} ±" in plain
    # summary.md rendered as a table
    assert "<th>dataset</th>" in text and "Best trial:" in plain


def test_chromium_renders_report(report, tmp_path):
    browser.require_chromium()
    url = (report / "report.html").as_uri()
    text = browser.visible_text(browser.dump_dom(url, budget_ms=2000))
    assert NAME in text and f"{len(TRIAL_PLAN)} trials" in text
    shot = browser.screenshot(url, tmp_path / "report.png", budget_ms=2000)
    assert shot.stat().st_size > 10_000
    assert browser.distinct_colours(shot) > 50


def test_report_without_pipeline_or_study(tmp_path):
    """Only trials.parquet and a few steps: the report still renders, and says what is missing."""
    folder = tmp_path / "bare"
    folder.mkdir()
    pd.DataFrame({"trial_id": ["a", "b"], "status": ["COMPLETED", "PRUNED"], "outer_lr": [0.1, 0.4],
                  "final_heldout_accuracy": [0.6, 0.5]}).to_parquet(folder / "trials.parquet")
    pd.DataFrame({"trial_id": ["a", "a", "a", "b"], "step": [1, 2, 3, 1], "meta_loss": [2.0, 1.8, 1.7, 2.1],
                  "heldout_accuracy": [0.4, 0.5, 0.6, 0.5]}).to_parquet(folder / "steps.parquet")
    assert cli.main(["report", str(folder)]) == 0
    plain = browser.visible_text((folder / "report.html").read_text(encoding="utf-8"))
    assert "2 trials" in plain
    assert "not computable" in plain
    assert "No validation results yet" in plain and "No Hessian results yet" in plain
    assert "No exported activations for trials a, b (among the top 2)" in plain and "--top 4" in plain
    figures = {p.name for p in (folder / "report_figures").glob("*.png")}
    assert "learning_curves.png" in figures and "validation_accuracy.png" not in figures


def test_report_errors(tmp_path, capsys):
    assert cli.main(["report", "missing", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no search results" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no trials" in capsys.readouterr().err


def test_report_on_a_real_pipeline_shows_the_hyperparameter_views(pipeline_run, tmp_path):
    """On the output of a real smoke pipeline (search.json, tables and study written by the tool), the
    report finds the sampled parameters in the search record and draws the scatter and
    parallel-coordinates views (it used to say 'too few finished trials' on every real search)."""
    import shutil
    exp, _, env, _ = pipeline_run
    copy = tmp_path / exp.name
    shutil.copytree(exp, copy, ignore=shutil.ignore_patterns("ray"))
    proc = run_cli(["report", str(copy)], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (copy / "report.html").read_text()
    assert "Too few finished trials" not in page
    assert (copy / "report_figures" / "param_scatter.png").is_file()
    assert "hyperparameters against the metric" in page
    trials = pd.read_parquet(copy / "trials.parquet")
    if (trials.status == "COMPLETED").sum() >= 2:
        assert (copy / "report_figures" / "parallel_coordinates.png").is_file()
