"""A diversity study's space file: the `study` section and the meta-learning settings it shares.

A search finds good settings; a study answers the question (docs/design.md, "Diversity studies"):
do networks with n diverse learned activations beat networks whose neurons share one? Its file
declares, and fixes before anything runs:

    description      one line
    fixed            the meta-learning settings every arm shares (MetaConfig keys: dataset,
                     activation, inner_hidden_size, epochs, inner_lr, ...)
    resources        cpus_per_trial, gpus_per_trial; max_concurrent, checkpoint_every, max_failures,
                     data_path, compile as in a search space
    study:
      seed           the study seed: the selection split, every meta-seed and every retraining seed
                     derive from it
      selection_fraction   share of the training data set aside for selection (default 0.1)
      arms           a list; each arm is a mapping of MetaConfig overrides (n_activations at least,
                     any other key optional) and an optional `name` (default n<k>)
      replicates     K meta-seeds per arm (>= 2)
      steps          outer steps of every replicate (no early stopping)
      divergence     {grad_norm: G}: a replicate whose meta-gradient norm exceeds G, or whose values
                     become non-finite, is FAILED (counted and reported, never replaced)
      runs           R retraining seeds per replicate
      standard       the std:* baselines (names, or true for every one the task can use)
      hidden_size    the validation networks' hidden width (default: the meta-learning H)
      contrasts      the primary family: a list of {a: ARM/MODE, b: ARM/MODE}; default: each arm with
                     n >= 2 (its `diverse`) against the n = 1 arm's `single:1`
      margin         the equivalence margin of TOST: accuracy points (e.g. 1.0) for classification,
                     [low, high] ratio bounds (e.g. [0.8, 1.25]) for an MSE task
      alpha          per side of TOST and for Holm (default 0.05)
      secondary      optional: the secondary protocol, SGD with momentum (default 0.9) at an lr picked
                     per network from `lrs` (a small list) on the selection split with the first
                     `pick_seeds` (2) retraining seeds, then every seed at the pick; run for each
                     arm's primary network and pure
      calibration    optional: a short search inside each arm before its replicates, on meta-seeds of
                     its own: params (MetaConfig keys with ranges, as a search space writes them; an
                     arm's own settings are never calibrated), trials and steps (the same for every
                     arm), grad_norm (a trial above it is dropped), sampler (a search space's sampler
                     section; each arm's is seeded on its own), scheduler (fifo: every trial runs its
                     steps), last (the score is the mean held-out metric of the last `last` steps, 10)
      controls       the controls that isolate diversity (docs/design.md, "Diversity studies"):
                       copies: true   per replicate of each n >= 2 arm, n blocks of its first learned
                                      activation (checked to equal single:1 before validation)
                       mix: true      diverse networks from n different replicates of the n = 1 arm
                       random: true   the untrained activations meta-learning started from, n against
                                      one, raw and scaled to the replicate's learned amplitude
                       matched: {m: M}  an extra n = 1 arm `matched` whose activation has M times the
                                      n = 1 arm's sub-network width (Ho = 50·M at Ho = 50)
      forecast       optional, forecast tasks only: {trajectories: N}: every validation network forecasts
                     from the first N test trajectories (default: all of them); the forecast metrics
                     feed the forecast table only, so a study can spend those seconds on meta-seeds
    resources.memory  Ray's per-trial memory resource: bytes or a size ("4.4GB", "512MiB")

Every problem is one line (exit 2) before anything starts.
"""
from __future__ import annotations

import math
import os

from dnn_search.errors import UserError
from dnn_search.results.study_record import Arm, CalibrationSpec, Contrast, SecondarySpec, StudySpec
from dnn_search.search.checker import Checker, read_yaml_file
from dnn_search.search.space import RESOURCE_KEYS, parse_memory

TOP_KEYS = ("description", "fixed", "resources", "max_concurrent", "checkpoint_every", "max_failures",
            "data_path", "compile", "study")
STUDY_KEYS = ("seed", "selection_fraction", "arms", "replicates", "steps", "divergence", "runs", "standard",
              "hidden_size", "contrasts", "margin", "alpha", "calibration", "secondary", "controls", "forecast")
SECONDARY_KEYS = ("lrs", "momentum", "pick_seeds")
CALIBRATION_KEYS = ("params", "trials", "steps", "grad_norm", "sampler", "scheduler", "last")
# a calibration trial runs every step it is given: nothing is ranked across arms, and inside an arm
# the trials are few and short, so a rung scheduler would only make the budgets of arms differ
CALIBRATION_SCHEDULERS = ("fifo",)
CONTROL_KEYS = ("copies", "mix", "random", "matched")
# keys an arm may not set: the study sets them per replicate
RESERVED = ("seed", "steps")


def _arms(c: Checker, raw, fixed: dict) -> tuple[Arm, ...]:
    from dnn_search.metalearn import MetaConfig
    known = set(MetaConfig().to_dict())
    if not isinstance(raw, list) or len(raw) < 2:
        c.fail("study.arms", "give a list of at least two arms (mappings of settings, n_activations at least)")
    arms, seen = [], {}
    for i, item in enumerate(raw):
        path = f"study.arms[{i}]"
        if not isinstance(item, dict):
            c.fail(path, f"expected a mapping of settings, got {type(item).__name__}")
        settings = {k: v for k, v in item.items() if k != "name"}
        for key in settings:
            if key not in known:
                c.fail(f"{path}.{key}", f"not a meta-learning setting (known: {', '.join(sorted(known))})")
            if key in RESERVED:
                c.fail(f"{path}.{key}", "set by the study for every replicate: remove it from the arm")
        merged = {**fixed, **settings}
        n = c.integer(f"{path}.n_activations", merged.get("n_activations", 1), 1)
        settings["n_activations"] = n
        name = str(item.get("name") or f"n{n}")
        if "/" in name or not name.strip():
            c.fail(f"{path}.name", f"{name!r}: use a name without '/'")
        key = tuple(sorted((k, repr(v)) for k, v in {**fixed, **settings}.items()))
        if key in seen:
            c.fail(path, f"arm {name!r} does not differ from arm {seen[key]!r}: arms must differ in a setting")
        if name in [a.name for a in arms]:
            c.fail(f"{path}.name", f"two arms are named {name!r}")
        seen[key] = name
        arms.append(Arm(name, settings))
    return tuple(arms)


def _network(c: Checker, path: str, text, arms: tuple[Arm, ...]) -> tuple[str, str]:
    if not isinstance(text, str) or "/" not in text:
        c.fail(path, f"{text!r}: write ARM/MODE, e.g. n2/diverse or n1/single:1")
    arm_name, mode = text.split("/", 1)
    arm = next((a for a in arms if a.name == arm_name), None)
    if arm is None:
        c.fail(path, f"no arm named {arm_name!r} (arms: {', '.join(a.name for a in arms)})")
    singles = [f"single:{k}" for k in range(1, arm.n + 1)]
    allowed = ["pure", *singles, *(["diverse"] if arm.n > 1 else []), "primary"]
    if mode not in allowed and not mode.startswith("std:"):
        c.fail(path, f"arm {arm_name} has no network {mode!r} (choose from {', '.join(allowed)}, std:NAME)")
    return arm.name, arm.primary if mode == "primary" else mode


def _contrasts(c: Checker, raw, arms: tuple[Arm, ...]) -> tuple[Contrast, ...]:
    if raw is None:
        one = next((a for a in arms if a.n == 1), None)
        if one is None:
            c.fail("study.contrasts", "no arm has n_activations 1, so there is no default primary family: "
                                      "list the contrasts")
        return tuple(Contrast(a.name, "diverse", one.name, "single:1") for a in arms if a.n > 1)
    if not isinstance(raw, list) or not raw:
        c.fail("study.contrasts", "give a list of {a: ARM/MODE, b: ARM/MODE}")
    out = []
    for i, item in enumerate(raw):
        path = f"study.contrasts[{i}]"
        section = c.mapping(path, item, ("a", "b"))
        a = _network(c, f"{path}.a", section.get("a"), arms)
        b = _network(c, f"{path}.b", section.get("b"), arms)
        if a == b:
            c.fail(path, "a network against itself")
        out.append(Contrast(*a, *b))
    return tuple(out)


def _margin(c: Checker, raw, ratio: bool) -> tuple[float, float]:
    """The margin on the analysis scale: (−m, m) accuracy points, or (log low, log high) of a ratio."""
    if ratio:
        if not (isinstance(raw, list) and len(raw) == 2):
            c.fail("study.margin", f"{raw!r}: an MSE task's margin is a ratio interval [low, high], e.g. [0.8, 1.25]")
        low = c.number("study.margin[0]", raw[0], 0, strictly=True)
        high = c.number("study.margin[1]", raw[1], 0, strictly=True)
        if not low < 1 < high:
            c.fail("study.margin", f"[{low}, {high}] must contain 1 (no difference): low < 1 < high")
        return math.log(low), math.log(high)
    m = c.number("study.margin", raw, 0, strictly=True) if not isinstance(raw, list) else c.fail(
        "study.margin", "a classification margin is one number of accuracy points, e.g. 1.0")
    return -m, m


def _calibration(c: Checker, raw, fixed: dict, arms: tuple[Arm, ...]) -> CalibrationSpec | None:
    from dnn_search.metalearn import MetaConfig
    from dnn_search.search.samplers import parse_sampler
    from dnn_search.search.space import _check_param
    if raw is None:
        return None
    section = c.mapping("study.calibration", raw, CALIBRATION_KEYS)
    params = section.get("params")
    if not isinstance(params, dict) or not params:
        c.fail("study.calibration.params", "give a mapping of settings to ranges, e.g. "
                                           "{inner_lr: {type: loguniform, low: 0.01, high: 0.1}}")
    checked = {}
    for name, item in params.items():
        if name in (*RESERVED, "n_activations"):
            c.fail(f"study.calibration.params.{name}", "set by the study (or what the arms differ in): not calibrated")
        checked[name] = _check_param(c, name, item)
    for arm in arms:
        mine = [k for k in checked if k not in arm.settings]
        if not mine:
            c.fail("study.calibration.params", f"arm {arm.name} sets every calibrated setting itself "
                                               f"({', '.join(checked)}): nothing to calibrate in it")
        for name in mine:
            for value in checked[name].corners():
                try:
                    MetaConfig.from_dict({**fixed, **arm.settings, name: value}).validate()
                except UserError as exc:
                    c.fail(f"study.calibration.params.{name}", f"{value!r} in arm {arm.name}: {exc}")
    sampler = parse_sampler(c, section.get("sampler"))
    scheduler = c.choice("study.calibration.scheduler", section.get("scheduler", "fifo"), CALIBRATION_SCHEDULERS)
    for key in ("trials", "steps", "grad_norm"):
        if key not in section:
            c.fail(f"study.calibration.{key}", "missing (the same for every arm)")
    return CalibrationSpec(
        params={k: p.to_dict() for k, p in checked.items()},
        trials=c.integer("study.calibration.trials", section["trials"], 1),
        steps=c.integer("study.calibration.steps", section["steps"], 1),
        grad_norm=c.number("study.calibration.grad_norm", section["grad_norm"], 0, strictly=True),
        sampler=sampler.to_dict(), scheduler=scheduler,
        last=c.integer("study.calibration.last", section.get("last", 10), 1))


def _secondary(c: Checker, raw) -> SecondarySpec | None:
    if raw is None:
        return None
    section = c.mapping("study.secondary", raw, SECONDARY_KEYS)
    lrs = section.get("lrs")
    if not isinstance(lrs, list) or not lrs:
        c.fail("study.secondary.lrs", "give a small list of SGD learning rates, e.g. [0.01, 0.03, 0.1]")
    lrs = [c.number(f"study.secondary.lrs[{i}]", v, 0, strictly=True) for i, v in enumerate(lrs)]
    if len(set(lrs)) != len(lrs):
        c.fail("study.secondary.lrs", "contains duplicates")
    momentum = c.number("study.secondary.momentum", section.get("momentum", 0.9), 0)
    if not momentum < 1:
        c.fail("study.secondary.momentum", f"{momentum}: must be in [0, 1)")
    return SecondarySpec(tuple(sorted(float(v) for v in lrs)), float(momentum),
                         c.integer("study.secondary.pick_seeds", section.get("pick_seeds", 2), 1))


def _controls(c: Checker, raw, arms: tuple[Arm, ...], fixed: dict) -> tuple[dict, tuple[Arm, ...]]:
    """The controls asked for, checked against what each needs, and the arms with `matched` added
    (last, so that no other arm's meta-seeds change)."""
    from dnn_search.metalearn import MetaConfig
    from dnn_search.results.study_record import MATCHED_ARM
    section = c.mapping("study.controls", raw, CONTROL_KEYS)
    controls: dict = {}
    diverse = [a for a in arms if a.n >= 2]
    reference = next((a for a in arms if a.n == 1), None)
    for key in ("copies", "mix", "random"):
        if key in section and c.boolean(f"study.controls.{key}", section[key]):
            if not diverse:
                c.fail(f"study.controls.{key}", "needs an arm with n_activations >= 2")
            if key == "mix" and reference is None:
                c.fail("study.controls.mix", "needs an arm with n_activations 1 (its replicates are mixed)")
            controls[key] = True
    if section.get("matched") is not None:
        matched = c.mapping("study.controls.matched", section["matched"], ("m",))
        m = c.integer("study.controls.matched.m", matched.get("m"), 1) if "m" in matched else c.fail(
            "study.controls.matched", "give m: the matched arm's activation has m times the n = 1 arm's Ho")
        if reference is None:
            c.fail("study.controls.matched", "needs an arm with n_activations 1 (the matched arm widens it)")
        if MATCHED_ARM in [a.name for a in arms]:
            c.fail("study.controls.matched", f"an arm is already named {MATCHED_ARM!r}: rename it")
        ho = MetaConfig.from_dict({**fixed, **reference.settings}).outer_hidden_size
        arms = (*arms, Arm(MATCHED_ARM, {**reference.settings, "n_activations": 1, "outer_hidden_size": m * ho},
                           control=MATCHED_ARM))
        controls["matched"] = m
    return controls, arms


def _forecast(c: Checker, raw, task, dataset: str) -> int | None:
    """The validation forecasts' trajectory count, or None (all). Only a forecast task has forecasts;
    the count is checked against the data when the study loads it (`study_data`)."""
    from dnn_search.tasks.forecast import ForecastTask
    if raw is None:
        return None
    section = c.mapping("study.forecast", raw, ("trajectories",))
    if not isinstance(task, ForecastTask):
        c.fail("study.forecast", f"the {dataset} task ({task.name}) has no forecasts: remove the section")
    if "trajectories" not in section:
        c.fail("study.forecast.trajectories", "missing: how many test trajectories each network forecasts")
    return c.integer("study.forecast.trajectories", section["trajectories"], 1)


def study_data(spec: StudySpec, data_path=None):
    """The study's dataset as its validation sees it (`validation_data` with the file's forecast count)."""
    from dnn_search.data import validation_data
    return validation_data(spec.dataset, data_path or spec.data_path, spec.forecast_trajectories, spec.source)


def parse_study(data, source: str = "") -> StudySpec:
    from dnn_search.metalearn import MetaConfig
    from dnn_search.tasks import task_for_dataset
    from dnn_search.validation import STANDARD_MODES, standard_modes

    c = Checker(source)
    top = c.mapping("", data, TOP_KEYS)
    if "study" not in top:
        c.fail("study", "missing: a study file has a `study:` section (see search_spaces/study_smoke.yaml)")
    s = c.mapping("study", top["study"], STUDY_KEYS)
    fixed = dict(c.mapping("fixed", top.get("fixed"), tuple(MetaConfig().to_dict())))
    for key in RESERVED:
        if key in fixed:
            c.fail(f"fixed.{key}", "set by the study for every replicate: remove it")
    arms = _arms(c, s.get("arms"), fixed)
    controls, arms = _controls(c, s.get("controls"), arms, fixed)
    for arm in arms:
        try:
            cfg = MetaConfig.from_dict({**fixed, **arm.settings})
            cfg.validate()
        except UserError as exc:
            c.fail(f"study.arms ({arm.name})", str(exc))
    task = task_for_dataset(MetaConfig.from_dict(fixed).dataset)
    ratio = task.search_mode == "min"
    usable = standard_modes(task)
    standard = s.get("standard", True)
    if standard is True:
        standard = list(usable)
    elif standard is False or standard is None:
        standard = []
    elif isinstance(standard, list):
        standard = [x if str(x).startswith("std:") else f"std:{x}" for x in standard]
        for name in standard:
            if name not in STANDARD_MODES:
                c.fail("study.standard", f"{name!r}: standard activations are {', '.join(STANDARD_MODES)}")
            if name not in usable:
                c.fail("study.standard", f"{name!r}: task {task.name} needs a smooth one: {', '.join(usable)}")
    else:
        c.fail("study.standard", "a list of standard activations (relu, gelu, ...) or true/false")
    divergence = c.mapping("study.divergence", s.get("divergence"), ("grad_norm",))
    resources = c.mapping("resources", top.get("resources"), RESOURCE_KEYS)
    spec = StudySpec(
        arms=arms, fixed=fixed,
        seed=c.integer("study.seed", s.get("seed", 0), 0),
        selection_fraction=c.number("study.selection_fraction", s.get("selection_fraction", 0.1), 0, strictly=True),
        replicates=c.integer("study.replicates", s.get("replicates", 8), 2),
        steps=c.integer("study.steps", s.get("steps", 100), 1),
        grad_norm_limit=c.number("study.divergence.grad_norm", divergence.get("grad_norm", 1e3), 0, strictly=True),
        runs=c.integer("study.runs", s.get("runs", 5), 1),
        standard=tuple(standard),
        hidden_size=None if s.get("hidden_size") is None else c.integer("study.hidden_size", s["hidden_size"], 1),
        contrasts=_contrasts(c, s.get("contrasts"), arms),
        margin=_margin(c, s.get("margin", [0.8, 1.25] if ratio else 1.0), ratio),
        alpha=c.number("study.alpha", s.get("alpha", 0.05), 0, strictly=True),
        cpus_per_trial=c.number("resources.cpus_per_trial", resources.get("cpus_per_trial", 1), 0, strictly=True),
        gpus_per_trial=c.number("resources.gpus_per_trial", resources.get("gpus_per_trial", 0), 0),
        memory_per_trial=parse_memory(c, "resources.memory", resources.get("memory", 0)),
        controls=controls,
        max_concurrent=(None if top.get("max_concurrent") is None
                        else c.integer("max_concurrent", top["max_concurrent"], 1)),
        checkpoint_every=c.integer("checkpoint_every", top.get("checkpoint_every", 5), 1),
        max_failures=c.integer("max_failures", top.get("max_failures", 2), 0),
        data_path=top.get("data_path"),
        compile=c.boolean("compile", top.get("compile", False)),
        description=str(top.get("description") or ""), source=source,
        calibration=_calibration(c, s.get("calibration"), fixed, arms),
        secondary=_secondary(c, s.get("secondary")),
        forecast_trajectories=_forecast(c, s.get("forecast"), task, MetaConfig.from_dict(fixed).dataset))
    if not spec.selection_fraction < 0.5:
        c.fail("study.selection_fraction", f"{spec.selection_fraction}: keep it below 0.5 (meta-learning and "
                                           "validation train on the rest)")
    if not spec.alpha < 0.5:
        c.fail("study.alpha", f"{spec.alpha}: must be below 0.5")
    return spec


def load_study(path: str | os.PathLike) -> StudySpec:
    """The study file at PATH, checked (one UserError naming the key on any problem)."""
    return parse_study(read_yaml_file(path, "study"), source=str(path))
