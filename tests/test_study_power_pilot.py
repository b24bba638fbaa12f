"""scripts/study_power_pilot.py plans a study from a finished one's variance components: checked on the
committed Hénon–Heiles study (its own variance.parquet, written by the study's analysis)."""
from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest

from dnn_search.study_stats import tost_power
from tests.conftest import REPO

PILOT = REPO / "results" / "henonheiles-diversity"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("study_power_pilot", REPO / "scripts" / "study_power_pilot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigma_rep_and_power_come_from_the_pilots_components(script):
    variance = pd.read_parquet(PILOT / "variance.parquet").set_index("arm")
    rows = {r["arm"]: r for r in script.pilot_rows(PILOT, runs=7)}
    for arm in ("n1", "n2"):
        expected = math.sqrt(variance.loc[arm, "sigma2_meta"] + variance.loc[arm, "sigma2_ret"] / 7)
        assert rows[arm]["sigma_rep"] == pytest.approx(expected, rel=1e-12)
        assert rows[arm]["sigma_rep_upper"] > rows[arm]["sigma_rep"]
    lines = script.report(PILOT, runs=7, k_chosen=8, contrasts=1)
    largest = max(rows.values(), key=lambda r: r["sigma_rep"])
    row = next(line for line in lines if line.startswith("| largest (n2)"))
    margin = (math.log(0.8), math.log(1.25))
    assert f"{largest['sigma_rep']:.3f}" in row and f"{tost_power(largest['sigma_rep'], 16, margin):.2f}" in row


def test_arms_with_too_few_replicates_are_not_planned_from(script):
    with pytest.raises(SystemExit, match="no arm completed 33 or more replicates"):
        script.report(PILOT, runs=5, k_chosen=8, contrasts=1, min_k=33)  # both arms have K = 32
