"""The summary's n-ablation on real tables (written by the tool's own writers, tests/fixtures_results):
FAILED trials are counted per n, not dropped (issue 18, point 11)."""
from __future__ import annotations

import pandas as pd

from conftest import markdown_table_rows
from dnn_search.results.ablation import n_ablation
from dnn_search.results.tables import TRIAL_COLUMNS, write_table
from fixtures_results import TRIAL_PLAN, build_results


def test_failed_trials_are_counted_per_n(tmp_path):
    folder = build_results(tmp_path, "failing", pipeline=True, with_artifacts=False)
    trials = pd.read_parquet(folder / "trials.parquet")
    failed = trials[trials.status == "FAILED"]
    assert len(failed) == sum(state == "FAIL" for state, _ in TRIAL_PLAN) > 0
    rows = markdown_table_rows((folder / "summary.md").read_text(), "| n | trials | completed")
    assert {int(n) for n in rows} == set(trials.n_activations)  # an n whose trials all failed is a row too
    for n, cells in rows.items():
        group = trials[trials.n_activations == int(n)]
        assert int(cells[5]) == int((group.status == "FAILED").sum())
        assert int(cells[1]) == int(group.status.isin(["COMPLETED", "PRUNED"]).sum())
    # and one n with nothing but failures: still a row, with its count and no value
    only_failed = trials.assign(status=["FAILED" if n == trials.n_activations.max() else s
                                        for n, s in zip(trials.n_activations, trials.status)])
    write_table(tmp_path / "trials.parquet", only_failed.to_dict("records"), TRIAL_COLUMNS)
    rows = markdown_table_rows("\n".join(n_ablation(pd.read_parquet(tmp_path / "trials.parquet"))), "| n |")
    top = rows[str(int(trials.n_activations.max()))]
    assert top[1] == "0" and top[3] == "–" and int(top[5]) == int((trials.n_activations == trials.n_activations.max()).sum())
