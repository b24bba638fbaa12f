"""Metric: what a task declares about each number it reports, so that no consumer guesses from a name.

A task's metrics are measured on a split (`heldout_<m>` during meta-learning, `test_<m>` and
`val_<m>` in validation); its extra metrics only validation trials report, under their own names
(a forecast's `rollout_mse`). Every table, summary, report and figure reads the direction, label
and display of a column from here: before, the summary chose how to show a metric by its name,
validation dropped metrics whose names lacked a known prefix, and every loss axis said
"cross-entropy".
"""
from __future__ import annotations

from dataclasses import dataclass

DIRECTIONS = ("max", "min")
SPLITS = ("heldout", "test", "val")


@dataclass(frozen=True)
class Metric:
    """One metric of a task.

    name: as the task's metric_sums / validation_metrics key it (accuracy, mse, rollout_mse);
    direction: max or min (which is better);
    label: the words for it in tables and on axes, with the unit where it has one;
    scale, digits: shown as value * scale with that many decimals (accuracy: 100, 2 -> percent);
    unit: a short unit after scaled values in headers ("%"), or "";
    log: statistics on log(value) and differences shown as ratios (errors spanning decades);
    detail: shown in the every-mode tables of summary.md and the report besides the primary metric.
    """

    name: str
    direction: str
    label: str = ""
    scale: float = 1.0
    digits: int = 4
    unit: str = ""
    log: bool = False
    detail: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be max or min, got {self.direction!r}")
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))

    def column(self, split: str | None = None) -> str:
        """`test_accuracy` for split "test"; the bare name for an extra metric (split None)."""
        return f"{split}_{self.name}" if split else self.name

    @property
    def header(self) -> str:
        """The name with its display unit, for a table header: "accuracy (%)", "mse"."""
        return f"{self.name} ({self.unit})" if self.unit else self.name
