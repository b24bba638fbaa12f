"""The honest comparison behind summary.md and the report: arms, picks on validation, tests on test.

Per dataset and optimiser, four networks are picked: `pure` (the base function: the reference), the
*best standard* (the best of `pure` and the standard activations `std:*`), the *best homogeneous*
(the best learned activation `single:k` of any exported trial) and the *best diverse* (the best
`diverse` network of a trial with at least two activations; a one-activation trial's "diverse"
network is homogeneous and never counts as diverse). Every "best" is picked by the mean over seeds
of the validation split (`val_<metric>`, carved from the training data), never on test; files
without a validation split (older pipelines) are picked on test, and say so.

The unit of replication is the retraining seed; the same seed gives every mode the same
initialisation and batch order, so modes are paired by seed. Differences between the picks come
with a Welch–Satterthwaite 95% CI and Welch p, and with a paired t-test on the seeds both have;
both kinds of p are Holm-adjusted within each comparison table, over its distinct tests (a row that
repeats another's test, as when pure is the best standard, is not counted twice). A log metric (the
task's Metric.log: MSE) is compared on log values, so its differences are ratios.

Which column is "the" metric, which direction is better and how it is shown come from the
dataset's task (`Task.metrics`); this module only computes (`summary.py` and the report render).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dnn_search.metrics import Metric
from dnn_search.modes import Mode, is_shared
from dnn_search.stats import Difference, holm_distinct, paired_t, welch

PICK_ROLES = ("pure", "best standard", "best homogeneous", "best diverse")
# which kinds of mode (Mode.word) each role picks from
ROLE_KINDS = {"best standard": ("pure", "standard"), "best homogeneous": ("homogeneous",),
              "best diverse": ("diverse",)}
# (A, B) of each comparison: A − B (or A / B for a log metric)
COMPARISONS = (("best diverse", "pure"), ("best diverse", "best standard"), ("best diverse", "best homogeneous"),
               ("best homogeneous", "pure"), ("best homogeneous", "best standard"))
NO_VALIDATION = "picked on test: no validation split in this file"
_STATUS_WORDS = {"COMPLETED": "completed", "PRUNED": "early-stopped"}
# the metrics of a dataset the task registry does not know (old files): classification's
_FALLBACK_METRICS = (Metric("accuracy", "max", "accuracy (fraction correct)", scale=100.0, digits=2, unit="%"),
                     Metric("loss", "min", "loss (cross-entropy, nats)", detail=True))


@dataclass(frozen=True)
class MetricView:
    """How a dataset's primary metric is compared and shown (from its task's declared Metric), and
    which other metrics the detail tables show (`Metric.detail`)."""

    primary: Metric
    details: tuple = ()        # (column, Metric): test_<m> of split metrics, <m> of extra ones

    @property
    def metric(self) -> str:
        """The metric's name without its split: accuracy, mse, ..."""
        return self.primary.name

    @property
    def column(self) -> str:
        return self.primary.column("test")

    @property
    def val_column(self) -> str:
        """The same metric on the validation split: val_accuracy, val_mse, ..."""
        return self.primary.column("val")

    @property
    def label(self) -> str:
        """e.g. "test accuracy (%)"."""
        return f"test {self.primary.header}"

    @property
    def unit(self) -> str:
        """" (%)" after a scaled metric's name in a header, else ""."""
        return f" ({self.primary.unit})" if self.primary.unit else ""

    @property
    def direction(self) -> str:
        return self.primary.direction

    @property
    def scale(self) -> float:
        return self.primary.scale

    @property
    def digits(self) -> int:
        return self.primary.digits

    @property
    def log(self) -> bool:
        return self.primary.log

    def best(self, keys, mean):
        pick = max if self.direction == "max" else min
        return pick(keys, key=mean) if keys else None


def task_of(dataset: str):
    """DATASET's task, or None when the registry does not know the dataset."""
    from dnn_search.errors import UserError
    from dnn_search.tasks import task_for_dataset
    try:
        return task_for_dataset(dataset)
    except UserError:
        return None


def metric_view(dataset: str) -> MetricView:
    """The view of DATASET's task (classification's when the dataset is unknown to the registry)."""
    task = task_of(dataset)
    metrics: tuple[Metric, ...] = task.metrics if task is not None else _FALLBACK_METRICS
    extra: tuple[Metric, ...] = task.extra_metrics if task is not None else ()
    primary = task.primary() if task is not None else _FALLBACK_METRICS[0]
    details = tuple((m.column("test"), m) for m in metrics if m.detail and m is not primary)
    details += tuple((m.column(), m) for m in extra if m.detail)
    return MetricView(primary, details)


# ------------------------------------------------------------------------------------- the analysis

@dataclass(frozen=True)
class TrialInfo:
    """What trials.parquet says about an exported trial (None where it does not say)."""

    trial_id: str
    n_activations: int | None
    steps_done: int | None
    status: str | None     # COMPLETED, PRUNED, ...

    @property
    def status_word(self) -> str:
        return "–" if not self.status else _STATUS_WORDS.get(self.status, self.status.lower())


@dataclass(frozen=True)
class Arm:
    """One network retrained over seeds: a mode, of a trial (None for `pure` and `std:*`, which do not
    depend on the trial), with its per-seed values of the metric on both splits (seed -> value)."""

    mode: str
    trial_id: str | None
    val: dict
    test: dict

    @property
    def kind(self) -> str:
        """pure, standard, homogeneous or diverse (Mode.word)."""
        return Mode.parse(self.mode).word

    @property
    def label(self) -> str:
        return self.mode if self.trial_id is None else f"{self.mode} of {self.trial_id}"


@dataclass(frozen=True)
class ComparisonRow:
    """A − B on test: Welch (unequal variances) and paired by seed, each p also Holm-adjusted within
    its table. For a log view the differences are of log values (ratios after exp)."""

    a_role: str
    b_role: str
    a: Arm | None
    b: Arm | None
    welch: Difference | None
    paired: Difference | None
    welch_p_holm: float
    paired_p_holm: float

    @property
    def label(self) -> str:
        return f"{self.a_role.replace('best ', '')} − {self.b_role.replace('best ', '')}"


@dataclass(frozen=True)
class Comparison:
    """The honest comparison of one (dataset, optimizer): every arm, the picks made on `split` ("val";
    "test" when the file has no validation split), the comparisons, and the trials whose
    one-activation "diverse" was left out."""

    dataset: str
    optimizer: str
    view: MetricView
    split: str
    arms: tuple
    picks: dict              # role (PICK_ROLES) -> Arm or None
    rows: tuple              # ComparisonRow, in COMPARISONS order
    homogeneous_diverse: tuple  # trial ids whose diverse network was homogeneous (n = 1): not diverse

    @property
    def picked_on_test(self) -> bool:
        return self.split == "test"


def finite_list(values) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def mean_of(mapping: dict) -> float:
    vals = finite_list(mapping.values())
    return float(np.mean(vals)) if vals else math.nan


def stat_scale(view: MetricView, mapping: dict) -> dict:
    """The statistics' scale: log for a log view (non-positive values dropped), else the values."""
    if not view.log:
        return mapping
    return {s: (math.log(v) if isinstance(v, float) and math.isfinite(v) and v > 0 else math.nan)
            for s, v in mapping.items()}


def trial_info(trials) -> dict:
    """trial_id -> TrialInfo from trials.parquet (an empty dict without it)."""
    if trials is None or "trial_id" not in getattr(trials, "columns", []):
        return {}

    def num(row, col):
        v = row.get(col)
        try:
            return int(v) if v is not None and math.isfinite(float(v)) else None
        except (TypeError, ValueError):
            return None
    out = {}
    for row in trials.to_dict("records"):
        status = row.get("status")
        out[str(row["trial_id"])] = TrialInfo(str(row["trial_id"]), num(row, "n_activations"), num(row, "steps_done"),
                                              str(status).upper() if status is not None else None)
    return out


def normalised(validation):
    """A copy with str trial_id/mode/dataset, an `optimizer` column (old files: sgd) and a `seed`."""
    frame = validation.copy()
    if "optimizer" not in frame.columns:
        frame["optimizer"] = "sgd"
    frame["optimizer"] = frame["optimizer"].fillna("sgd").astype(str)
    if "trial_id" not in frame.columns:
        frame["trial_id"] = ""
    for col in ("trial_id", "mode", "dataset"):
        frame[col] = frame[col].astype(str)
    if "seed" not in frame.columns:
        frame["seed"] = frame["run"] if "run" in frame.columns else range(len(frame))
    return frame


def n_activations_of(trial: str, group, info: dict) -> int:
    known = info.get(trial)
    if known is not None and known.n_activations is not None:
        return known.n_activations
    # no trials.parquet: the number of learned activations the trial was validated with
    return sum(Mode.parse(m).kind == "single" for m in group["mode"].unique())


def _arms(group, view: MetricView, info: dict) -> tuple[list[Arm], list[str]]:
    """The arms of one (dataset, optimizer) group: pure and std:* once (deduplicated by seed: the
    pipeline repeats them under every trial), single:k and diverse per trial; the diverse networks of
    one-activation trials are left out (and listed)."""
    has_val = view.val_column in group.columns

    def values(rows, column):
        if column not in rows.columns:
            return {s: math.nan for s in rows["seed"]}
        return {s: (float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan)
                for s, v in zip(rows["seed"], rows[column])}

    arms, homogeneous_diverse = [], []
    shared = group[group["mode"].map(is_shared)]
    for mode, rows in shared.groupby("mode", sort=False):
        rows = rows.drop_duplicates("seed", keep="first")
        arms.append(Arm(mode, None, values(rows, view.val_column) if has_val else values(rows, "_none"),
                        values(rows, view.column)))
    own = group[~group.index.isin(shared.index)]
    for trial, rows_t in own.groupby("trial_id", sort=False):
        n = n_activations_of(trial, group[group["trial_id"] == trial], info)
        for mode, rows in rows_t.groupby("mode", sort=False):
            if Mode.parse(mode).kind == "diverse" and n < 2:
                homogeneous_diverse.append(trial)
                continue
            rows = rows.drop_duplicates("seed", keep="first")
            arms.append(Arm(mode, trial, values(rows, view.val_column) if has_val else values(rows, "_none"),
                            values(rows, view.column)))
    return arms, homogeneous_diverse


def _pick(arms: list[Arm], kinds: tuple, view: MetricView, split: str) -> Arm | None:
    """The arm of one of KINDS with the best mean over seeds on SPLIT; the first one on a tie."""
    candidates = [a for a in arms if a.kind in kinds and math.isfinite(mean_of(getattr(a, split)))]
    return view.best(candidates, lambda a: mean_of(getattr(a, split)))


def compare(validation, trials=None) -> list[Comparison]:
    """The honest comparison of every (dataset, optimizer) in VALIDATION (validation.parquet as a
    DataFrame), with TRIALS (trials.parquet, for n_activations) when available. Picks are made on
    the validation split (`val_<metric>`); on test only where the file has no finite validation value."""
    if validation is None or len(validation) == 0:
        return []
    frame = normalised(validation)
    info = trial_info(trials)
    out = []
    for (dataset, optimizer), group in frame.groupby(["dataset", "optimizer"], sort=False):
        view = metric_view(dataset)
        arms, homogeneous_diverse = _arms(group, view, info)
        split = "val" if any(math.isfinite(mean_of(a.val)) for a in arms) else "test"
        picks = {"pure": next((a for a in arms if a.mode == "pure"), None),
                 **{role: _pick(arms, kinds, view, split) for role, kinds in ROLE_KINDS.items()}}
        raw: list[tuple[str, str, Arm | None, Arm | None, Difference | None, Difference | None]] = []
        for a_role, b_role in COMPARISONS:
            a, b = picks[a_role], picks[b_role]
            if a is None or b is None:
                raw.append((a_role, b_role, a, b, None, None))
                continue
            ta, tb = stat_scale(view, a.test), stat_scale(view, b.test)
            raw.append((a_role, b_role, a, b, welch(list(ta.values()), list(tb.values())), paired_t(ta, tb)))
        # one family of distinct tests: with pure as the best standard, "vs pure" and "vs best
        # standard" are the same test and count once
        tests = [(id(r[2]), id(r[3])) if r[2] is not None and r[3] is not None else (r[0], r[1]) for r in raw]
        welch_holm = holm_distinct([r[4].p if r[4] else math.nan for r in raw], tests)
        paired_holm = holm_distinct([r[5].p if r[5] else math.nan for r in raw], tests)
        rows = tuple(ComparisonRow(*r, wh, ph) for r, wh, ph in zip(raw, welch_holm, paired_holm))
        out.append(Comparison(dataset, optimizer, view, split, tuple(arms), picks, rows,
                              tuple(dict.fromkeys(homogeneous_diverse))))
    return out
