"""The controls of a diversity study, between meta-learning and validation (docs/design.md,
"Diversity studies"): the activation files they train from, the `copies` check, the mix groups.

After stage 1, and before any validation training, the driver calls `prepare_controls`, which
1. writes each completed n >= 2 replicate's control activation sets (`controls.copies`,
   `controls.initial`, `controls.scaled_to`) into `study_controls/<replicate>/`, with the code's
   own activation-file writer, so that every control network trains from a file a reader can open;
2. checks once per study (on each n >= 2 arm's first completed replicate) that the `copies` network
   computes exactly what `single:1` computes before training; a mismatch stops the study;
3. draws each n >= 2 arm's mix groups from the n = 1 arm's completed replicates, once, and records
   them (`study_controls/mix.json`: the replicate ids of each group), then writes each group's set.
A resume reads what is already there: the groups are never drawn again.

The matched arm needs nothing here: it is an ordinary arm that the study file's parser adds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dnn_search.atomic import atomic_write_text
from dnn_search.errors import UserError
from dnn_search.results.study_controls import COPIES_CHECK as COPIES_CHECK_FILE
from dnn_search.results.study_controls import MIX_RECORD as MIX_FILE
from dnn_search.results.study_record import (
    CONTROL_MODES,
    COPIES_K,
    MIX_MODE,
    STUDY_CONTROLS_DIR,
    Arm,
    StudySpec,
    mix_retraining_seed,
    mix_seed,
    replicate_folder,
    replicates_of,
)

CHECK_BATCH = 256  # the first training samples: the fixed batch of the copies check


def controls_dir(exp_dir: Path) -> Path:
    return Path(exp_dir) / STUDY_CONTROLS_DIR


def control_file(exp_dir: Path, replicate: str, stem: str) -> Path:
    return controls_dir(exp_dir) / replicate / f"{stem}.npz"


def mix_file(exp_dir: Path, arm: str, group: int) -> Path:
    return controls_dir(exp_dir) / "mix" / f"{arm}-g{group}.npz"


def _exact(path: Path):
    """The exact weights of an activation file the study wrote (.npz, so never None)."""
    from dnn_search.actfile import read_activation_file
    acts = read_activation_file(path).exact
    if acts is None:
        raise UserError(f"{path}: has no exact activation weights")
    return acts


def _learned(exp_dir: Path, key: str):
    from dnn_search.replicate import ACTIVATIONS_STEM
    return _exact(replicate_folder(exp_dir, key) / f"{ACTIVATIONS_STEM}.npz")


def completed(exp_dir: Path, spec: StudySpec, arm: Arm) -> list:
    from dnn_search.replicate import read_result
    return [r for r in replicates_of(spec) if r.arm == arm.name
            and (read_result(replicate_folder(exp_dir, r.key)) or {}).get("status") == "COMPLETED"]


def control_arms(spec: StudySpec) -> list[Arm]:
    """The arms whose replicates get per-replicate controls and mix groups: n >= 2, from the file."""
    return [a for a in spec.arms if a.n >= 2 and not a.control]


def write_replicate_controls(exp_dir: Path, spec: StudySpec, arm: Arm, rep) -> None:
    """The copies, random and random-scaled sets of one replicate (those asked for, if missing)."""
    from dnn_search import controls
    from dnn_search.actfile import write_activation_files
    from dnn_search.metalearn import MetaConfig
    folder = controls_dir(exp_dir) / rep.key
    stems = {stem for mode, (stem, _) in CONTROL_MODES.items() if mode in _modes(spec, arm)}
    if all(control_file(exp_dir, rep.key, s).exists() for s in stems):
        return
    folder.mkdir(parents=True, exist_ok=True)
    learned = _learned(exp_dir, rep.key)
    cfg = MetaConfig.from_dict(spec.arm_config(arm))
    meta = {"arm": arm.name, "replicate": rep.key, "meta_seed": rep.meta_seed}
    sets = {}
    if "copies" in stems:
        sets["copies"] = (controls.copies(learned, COPIES_K), {"copies_of": COPIES_K})
    if "random" in stems:
        start = controls.initial(cfg.activation, cfg.n_activations, cfg.outer_hidden_size, rep.meta_seed)
        target = controls.distance(learned)
        sets["random"] = (start, {"initial_from_meta_seed": rep.meta_seed})
        sets["random-scaled"] = (controls.scaled_to(start, target), {
            "initial_from_meta_seed": rep.meta_seed, "scaled_to_distance": target.tolist()})
    for stem, (acts, extra) in sets.items():
        write_activation_files(folder, stem, acts, {**meta, **extra, "control": stem})


def _modes(spec: StudySpec, arm: Arm) -> list[str]:
    from dnn_search.results.study_record import control_modes
    return control_modes(spec, arm)


def check_copies_once(exp_dir: Path, spec: StudySpec) -> dict:
    """The copies check on each n >= 2 arm's first completed replicate, from the files the trainings
    will use; recorded in study_controls/copies_check.json. A mismatch raises a UserError."""
    import torch

    from dnn_search import controls
    from dnn_search.data import load_dataset
    from dnn_search.results.study_record import retraining_seed
    from dnn_search.search.study_plan import validation_settings
    path = controls_dir(exp_dir) / COPIES_CHECK_FILE
    if path.exists():
        return json.loads(path.read_text())
    data = load_dataset(spec.dataset, spec.data_path)
    x = data.x_train[:CHECK_BATCH].to(torch.float32)
    output = data.task_object().output_size(data)
    record = {}
    for arm in control_arms(spec):
        reps = completed(exp_dir, spec, arm)
        if not reps:
            continue
        rep = reps[0]
        copied = _exact(control_file(exp_dir, rep.key, "copies"))
        seed = retraining_seed(spec, rep, 0)
        hidden = validation_settings(spec, arm, f"copies:{COPIES_K}")["hidden_size"]
        diff = controls.check_copies(_learned(exp_dir, rep.key), copied, COPIES_K, x, output, hidden, seed)
        record[arm.name] = {"replicate": rep.key, "k": COPIES_K, "seed": seed, "batch": int(x.shape[0]),
                            "max_abs_difference": diff}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def draw_mix_groups(exp_dir: Path, spec: StudySpec) -> dict:
    """Each n >= 2 arm's mix groups, drawn once from the n = 1 arm's completed replicates and
    recorded in study_controls/mix.json (read back as they are on a resume)."""
    from dnn_search import controls
    from dnn_search.actfile import write_activation_files
    path = controls_dir(exp_dir) / MIX_FILE
    if path.exists():
        return json.loads(path.read_text())
    reference = spec.reference_arm
    if reference is None:  # the study file's parser refuses mix without an n = 1 arm
        raise UserError("the mix control needs an arm with n_activations 1")
    ids = [r.key for r in completed(exp_dir, spec, reference)]
    drawn: dict[str, dict] = {}
    for arm in control_arms(spec):
        groups = controls.mix_groups(ids, arm.n, mix_seed(spec, arm))
        drawn[arm.name] = {"n": arm.n, "seed": mix_seed(spec, arm), "groups": groups}
        for g, members in enumerate(groups):
            mixed = controls.combine([_learned(exp_dir, key) for key in members])
            write_activation_files(mix_file(exp_dir, arm.name, g).parent, f"{arm.name}-g{g}", mixed,
                                   {"arm": arm.name, "group": g, "members": members, "control": MIX_MODE})
    record = {"reference_arm": reference.name, "k1": len(ids), "arms": drawn}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def prepare_controls(exp_dir: Path, spec: StudySpec) -> None:
    """Everything the controls' trainings read, before the first of them starts (module docstring)."""
    if not any(spec.controls.get(k) for k in ("copies", "random", "mix")):
        return
    controls_dir(exp_dir).mkdir(exist_ok=True)
    for arm in control_arms(spec):
        for rep in completed(exp_dir, spec, arm):
            write_replicate_controls(exp_dir, spec, arm, rep)
    if spec.controls.get("copies"):
        check_copies_once(exp_dir, spec)
    if spec.controls.get("mix"):
        draw_mix_groups(exp_dir, spec)


def control_training(exp_dir: Path, replicate: str, mode: str) -> dict:
    """The extra fields of a control training's job: the file it trains from and how it is built."""
    if mode not in CONTROL_MODES:
        return {}
    stem, build = CONTROL_MODES[mode]
    return {"act_path": str(control_file(exp_dir, replicate, stem)), "build": build}


@dataclass(frozen=True)
class MixJob:
    arm: str
    group: int
    run: int
    seed: int

    @property
    def replicate(self) -> str:
        """The group's id in the tables' `replicate` column (it is no arm's replicate)."""
        return f"{self.arm}-mix-g{self.group}"

    @property
    def key(self) -> str:
        return f"{self.replicate}-r{self.run}"


def mix_jobs(exp_dir: Path, spec: StudySpec) -> list[MixJob]:
    if not spec.controls.get("mix"):
        return []
    path = controls_dir(exp_dir) / MIX_FILE
    if not path.exists():
        raise UserError(f"{path} is missing: the mix groups are drawn before validation")
    record = json.loads(path.read_text())
    return [MixJob(arm.name, g, r, mix_retraining_seed(spec, arm, g, r))
            for arm in control_arms(spec) for g in range(len(record["arms"][arm.name]["groups"]))
            for r in range(spec.runs)]


def mix_batches(exp_dir: Path, spec: StudySpec, jobs: list[MixJob], out_dir: Path) -> list[dict]:
    """One Tune trial per mix group: its retraining seeds not done yet, as `study_validation_trial`
    takes them (the group's `meta_seed` is -1: it has none of its own)."""
    from dnn_search.search.study_plan import validation_settings
    groups: dict[tuple[str, int], list[MixJob]] = {}
    for j in jobs:
        groups.setdefault((j.arm, j.group), []).append(j)
    return [{"arm": arm, "replicate": todo[0].replicate, "meta_seed": -1,
             "dataset": spec.dataset, "act_path": str(mix_file(exp_dir, arm, g)),
             "trainings": [{"key": j.key, "mode": MIX_MODE, "build": "diverse", "run": j.run, "seed": j.seed,
                            "validation": validation_settings(spec, spec.arm(arm), MIX_MODE),
                            "out": str(out_dir / f"{j.key}.json")} for j in todo]}
            for (arm, g), todo in groups.items()]


def plan_lines(spec: StudySpec) -> list[str]:
    """The controls in the --dry-run plan (their per-replicate networks are in each arm's line)."""
    lines = []
    if spec.controls.get("mix") and spec.reference_arm is not None:
        for arm in control_arms(spec):
            groups = spec.replicates // arm.n
            note = "" if groups >= 2 else " (fewer than 2 groups: descriptive only)"
            lines.append(f"  controls: mix for {arm.name}: {groups} group(s) of {arm.n} {spec.reference_arm.name} "
                         f"replicates x {spec.runs} seeds = {groups * spec.runs} trainings{note}")
    if spec.controls.get("matched"):
        matched = next(a for a in spec.arms if a.control)
        lines.append(f"  controls: {matched.name} is an n = 1 arm with Ho = {matched.settings['outer_hidden_size']} "
                     f"({spec.controls['matched']} x the n = 1 arm's), validated as single:1")
    return lines
