"""A diversity study's record: its spec as typed values, the names of the files it leaves, and
the one reader and writer of `study.json` (the results layer: analysis, summary and the Python
API read a study through here; `search/study_spec.py` parses the file into these types).

    STORAGE/NAME/
      study.json            the resolved spec, the space file, creation time, every resume
      split.npz             the selection split (indices into the training data), its seed, fraction
      calibration/<arm>-c<i>/  one calibration trial: params.json (its sampled settings) and a replicate's files
      calibration.parquet   every calibration trial: params, score, dropped or not, the pick per arm
      replicates/<arm>-m<j>/  one replicate: state.pt, steps.json, indices.npz, result.json, activations.*
      study_validation/<key>.json   one finished validation training
      study_controls/       the controls' activation sets (per replicate, mix groups) and mix.json
      replicates.parquet, validation.parquet, comparisons.parquet, summary.md, stages.json
      optuna_journal.log    the replicates as Optuna trials (arm, meta_seed), for optuna-dashboard
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.splits import derive_seed

STUDY_FILE = "study.json"
SPLIT_FILE = "split.npz"
REPLICATES_DIR = "replicates"
CALIBRATION_DIR = "calibration"
CALIBRATION_TABLE = "calibration.parquet"
STUDY_VALIDATION_DIR = "study_validation"
STUDY_CONTROLS_DIR = "study_controls"
MIX_TABLE = "mix.parquet"
REPLICATES_TABLE = "replicates.parquet"
COMPARISONS_TABLE = "comparisons.parquet"
# validation.parquet's forecast columns (forecast tasks): how many of a training's forecasts diverged
# (the task's metric) and how many it made (written beside it by the analysis, for the forecast table)
DIVERGED_COLUMN = "rollout_diverged"
FORECASTS_COLUMN = "forecasts"
SCHEMA_VERSION = 1


def replicate_folder(exp_dir: Path, key: str) -> Path:
    return Path(exp_dir) / REPLICATES_DIR / key


def is_study(exp_dir: Path) -> bool:
    return (Path(exp_dir) / STUDY_FILE).is_file()


def read_study_record(exp_dir: Path) -> dict:
    return json.loads((Path(exp_dir) / STUDY_FILE).read_text())


def write_study_record(exp_dir: Path, record: dict) -> None:
    atomic_write_text(Path(exp_dir) / STUDY_FILE, json.dumps(record, indent=2) + "\n")


def read_spec(exp_dir: Path) -> "StudySpec":
    return StudySpec.from_dict(read_study_record(exp_dir)["spec"])


@dataclass(frozen=True)
class Arm:
    """One arm: its name and the MetaConfig settings that differ from `fixed` (n_activations at least)."""

    name: str
    settings: dict
    control: str = ""  # "matched" for the capacity-control arm the study adds; "" for the file's arms

    @property
    def n(self) -> int:
        return int(self.settings["n_activations"])

    @property
    def primary(self) -> str:
        """The arm's primary network: single:1 for one learned activation, diverse for several."""
        return "single:1" if self.n == 1 else "diverse"


@dataclass(frozen=True)
class Contrast:
    """One primary contrast: network A (arm, mode) against network B (arm, mode)."""

    a_arm: str
    a_mode: str
    b_arm: str
    b_mode: str

    @property
    def label(self) -> str:
        return f"{self.a_arm}/{self.a_mode} vs {self.b_arm}/{self.b_mode}"

    @property
    def independent(self) -> bool:
        """Different arms are independent samples (Welch); one arm's networks share replicates and
        retraining seeds (a one-sample t on the per-replicate differences)."""
        return self.a_arm != self.b_arm


@dataclass(frozen=True)
class CalibrationSpec:
    """The study file's `calibration` section: a short search inside each arm before its replicates.

    `params` maps a MetaConfig key to its range as a search space writes it ({type, low, high} or
    {type, choices}); every arm gets `trials` trials of `steps` outer steps from its own seeded
    `sampler` (a search space's sampler section) under `scheduler` (the trials of one arm only); a
    trial whose meta-gradient norm exceeds `grad_norm` (or whose values stop being finite) is
    dropped; the pick is the best mean held-out metric over the last `last` steps."""

    params: dict
    trials: int
    steps: int
    grad_norm: float
    sampler: dict
    scheduler: str = "fifo"
    last: int = 10

    def params_for(self, arm: "Arm") -> dict:
        """The parameters calibrated in ARM: those it does not set itself (an arm's own setting is
        what it is compared on, so calibration never moves it)."""
        return {k: v for k, v in self.params.items() if k not in arm.settings}


@dataclass(frozen=True)
class SecondarySpec:
    """The study file's `secondary` section: the secondary protocol, plain SGD with heavy-ball
    `momentum` at an lr picked per network (and replicate) from `lrs` on the selection split with the
    replicate's first `pick_seeds` retraining seeds, then all R seeds at the pick."""

    lrs: tuple
    momentum: float = 0.9
    pick_seeds: int = 2


@dataclass(frozen=True)
class StudySpec:
    arms: tuple
    fixed: dict = field(default_factory=dict)
    seed: int = 0
    selection_fraction: float = 0.1
    replicates: int = 8
    steps: int = 100
    grad_norm_limit: float = 1e3
    runs: int = 5
    standard: tuple = ()
    hidden_size: int | None = None
    contrasts: tuple = ()
    margin: tuple[float, float] = (-1.0, 1.0)
    alpha: float = 0.05
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    memory_per_trial: int = 0   # bytes of Ray's `memory` resource per trial (0: none asked)
    max_concurrent: int | None = None
    checkpoint_every: int = 5
    max_failures: int = 2
    data_path: str | None = None
    compile: bool = False
    description: str = ""
    source: str = ""
    calibration: CalibrationSpec | None = None
    secondary: SecondarySpec | None = None
    # the controls asked for: {"copies": True, "mix": True, "random": True, "matched": m}
    controls: dict = field(default_factory=dict)
    # forecast tasks: validation forecasts from the first `forecast_trajectories` test trajectories only
    # (None: all). The forecasts are most of a Hénon–Heiles training's cost and only feed the forecast
    # table, never a primary contrast, so a study may buy meta-seeds with them.
    forecast_trajectories: int | None = None

    def secondary_spec(self) -> "SecondarySpec":
        """The `secondary` section (a ValueError where the file has none: callers check first)."""
        if self.secondary is None:
            raise ValueError("this study has no secondary protocol")
        return self.secondary

    def calibration_spec(self) -> "CalibrationSpec":
        """The `calibration` section (a ValueError where the file has none: callers check first)."""
        if self.calibration is None:
            raise ValueError("this study has no calibration")
        return self.calibration

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def arm_config(self, arm: Arm) -> dict:
        """The MetaConfig settings of ARM's replicates (without the meta-seed)."""
        return {**self.fixed, **arm.settings, "steps": self.steps}

    @property
    def dataset(self) -> str:
        """The study's dataset: the meta-learning settings' `dataset` (MetaConfig's default when the
        file leaves it out), the one place every part of a study resolves it."""
        from dnn_search.metalearn import MetaConfig
        return MetaConfig.from_dict(self.fixed).dataset

    @property
    def reference_arm(self) -> Arm | None:
        """The n = 1 arm (its settings are pure's and std:*'s), or None. Never a control arm."""
        return next((a for a in self.arms if a.n == 1 and not a.control), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["arms"] = [asdict(a) for a in self.arms]
        out["contrasts"] = [asdict(c) for c in self.contrasts]
        out["calibration"] = None if self.calibration is None else asdict(self.calibration)
        out["secondary"] = None if self.secondary is None else {**asdict(self.secondary),
                                                                "lrs": list(self.secondary.lrs)}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "StudySpec":
        values = dict(data)
        values["arms"] = tuple(Arm(**a) for a in data["arms"])
        values["contrasts"] = tuple(Contrast(**c) for c in data["contrasts"])
        for key in ("standard", "margin"):
            values[key] = tuple(data[key])
        values["calibration"] = CalibrationSpec(**data["calibration"]) if data.get("calibration") else None
        values["secondary"] = (SecondarySpec(**{**data["secondary"], "lrs": tuple(data["secondary"]["lrs"])})
                               if data.get("secondary") else None)
        return cls(**values)

    def calibrated(self, picks: dict[str, dict]) -> "StudySpec":
        """This spec with each arm's calibration pick (PICKS: arm name -> settings) merged into its
        settings: what its replicates meta-learn with and its primary validation trains with."""
        from dataclasses import replace
        arms = tuple(replace(a, settings={**a.settings, **picks.get(a.name, {})}) for a in self.arms)
        return replace(self, arms=arms)


# ---------------------------------------------------------------------------- the plan's seeds
#
# Seeds are derived (`splits.derive_seed`) from the study seed, never counted up, so that adding an
# arm or a replicate changes no other replicate's seeds: the selection split (study seed, 0); replicate
# j of arm a: meta-seed (study seed, 1, a, j); its retraining seed r: (study seed, 2, meta-seed, r),
# shared by every network validated for that replicate and distinct across replicates; calibration
# trial i of arm a: meta-seed (study seed, 3, a, i), a stream of its own, so calibration never runs a
# replicate's meta-seed (`calibration_trials` refuses a collision rather than trusting the odds); the
# mix groups of an n-arm: retraining seeds (study seed, 4, n, group, run), the draw (study seed, 5, n).
# Each stream has its own second part because SeedSequence ignores trailing zeros: (s, 3, 2) and
# (s, 3, 2, 0) give the same seed, so two streams may not share a number with different arities.

@dataclass(frozen=True)
class Replicate:
    arm: str
    index: int
    meta_seed: int

    @property
    def key(self) -> str:
        return f"{self.arm}-m{self.index}"


def selection_seed(spec: StudySpec) -> int:
    return derive_seed(spec.seed, 0)


def replicates_of(spec: StudySpec) -> list[Replicate]:
    return [Replicate(arm.name, j, derive_seed(spec.seed, 1, a, j))
            for a, arm in enumerate(spec.arms) for j in range(spec.replicates)]


@dataclass(frozen=True)
class CalibrationTrial:
    arm: str
    index: int
    meta_seed: int

    @property
    def key(self) -> str:
        return f"{self.arm}-c{self.index}"


def calibration_trials(spec: StudySpec, arm: Arm) -> list[CalibrationTrial]:
    """ARM's calibration trials (none without a calibration section), on meta-seeds of their own."""
    if spec.calibration is None:
        return []
    a = [x.name for x in spec.arms].index(arm.name)
    trials = [CalibrationTrial(arm.name, i, derive_seed(spec.seed, 3, a, i)) for i in range(spec.calibration.trials)]
    taken = {r.meta_seed for r in replicates_of(spec)} & {t.meta_seed for t in trials}
    if taken:
        raise ValueError(f"calibration meta-seeds {sorted(taken)} collide with replicates' (change study.seed)")
    return trials


def calibration_folder(exp_dir: Path, key: str) -> Path:
    return Path(exp_dir) / CALIBRATION_DIR / key


def retraining_seed(spec: StudySpec, rep: Replicate, run: int) -> int:
    return derive_seed(spec.seed, 2, rep.meta_seed, run)


def secondary_networks(spec: StudySpec, arm: Arm) -> list[str]:
    """The networks validated under the secondary protocol for each replicate of ARM: its primary
    network and pure (every arm's, so a `matched` arm's too); none without a secondary section."""
    return [] if spec.secondary is None else [arm.primary, "pure"]


def networks(spec: StudySpec, arm: Arm) -> list[str]:
    """The networks validated for each replicate of ARM: its primary one first, then each single:k,
    pure and the std:* baselines, then the controls of an n >= 2 arm (`control_modes`). The matched
    arm validates its primary network only: it is compared with the other arms' primary networks."""
    if arm.control == "matched":
        return [arm.primary]
    singles = [f"single:{k}" for k in range(1, arm.n + 1)]
    return ([arm.primary] + [s for s in singles if s != arm.primary] + ["pure", *spec.standard]
            + control_modes(spec, arm))


# The per-replicate control networks of an n >= 2 arm: the activation file each trains from (under
# the replicate's study_controls folder) and the validation mode that builds it from that file.
COPIES_K = 1  # copies of the first learned activation: the one every replicate has
CONTROL_MODES = {
    f"copies:{COPIES_K}": ("copies", "diverse"),
    "random:diverse": ("random", "diverse"),
    "random:single": ("random", "single:1"),
    "random-scaled:diverse": ("random-scaled", "diverse"),
    "random-scaled:single": ("random-scaled", "single:1"),
}
MIX_MODE = "mix"
MATCHED_ARM = "matched"


def control_modes(spec: StudySpec, arm: Arm) -> list[str]:
    """The control networks validated per replicate of ARM (none for an n = 1 arm)."""
    if arm.n < 2 or arm.control:
        return []
    wanted = {"copies": spec.controls.get("copies"), "random": spec.controls.get("random"),
              "random-scaled": spec.controls.get("random")}
    return [mode for mode, (stem, _) in CONTROL_MODES.items() if wanted[stem]]


def mix_seed(spec: StudySpec, arm: Arm) -> int:
    """The seed of the draw of ARM's mix groups from the n = 1 arm's replicates."""
    return derive_seed(spec.seed, 5, arm.n)


def mix_retraining_seed(spec: StudySpec, arm: Arm, group: int, run: int) -> int:
    return derive_seed(spec.seed, 4, arm.n, group, run)


# ----------------------------------------------------------------------------- reading it back

@dataclass
class StudyResults:
    """A study's results for a notebook (`dnn_search.open_search(name)` on a study's folder):
    `.replicates` (one row per arm × meta-seed: status, steps, per-network means), `.comparisons`
    (contrast, estimate, CIs, p, Holm p, verdict), `.validation` (one row per training),
    `.variance` (variance components), `.calibration` (every calibration trial, the pick per arm
    flagged), `.spec`, `.record` (study.json), `.summary_md`; None where a stage has not written its
    table yet."""

    folder: Path
    name: str
    spec: StudySpec
    record: dict
    replicates: object
    comparisons: object
    validation: object
    variance: object
    summary_md: str | None
    calibration: object = None
    mix: object = None  # mix.parquet: the mix groups (arm, group, member replicate ids, means)


def load_study_results(folder: Path) -> StudyResults:
    import pandas as pd
    folder = Path(folder)

    def table(name: str):
        path = folder / name
        return pd.read_parquet(path) if path.is_file() else None
    record = read_study_record(folder)
    summary = folder / "summary.md"
    return StudyResults(folder, record.get("name", folder.name), StudySpec.from_dict(record["spec"]), record,
                        table(REPLICATES_TABLE), table(COMPARISONS_TABLE), table("validation.parquet"),
                        table("variance.parquet"), summary.read_text() if summary.is_file() else None,
                        table(CALIBRATION_TABLE), table(MIX_TABLE))
