"""A diversity study's controls in its tables and summary (docs/design.md, "Diversity studies").

The contrasts each control exists for, in one family (`controls`, Holm-adjusted on its own):
- `copies:1` against `single:1` of the same replicate (one-sample t on the per-replicate
  differences): n blocks of one activation are the one-activation network;
- `random:diverse` against `random:single`, raw and at the learned amplitude (`random-scaled:*`),
  within each replicate (one-sample t): does any diversity of shape help, without learning?
- the arm's `mix` groups against its `diverse` replicates (Welch: independent samples): does joint
  meta-learning matter, or only that the activations differ? With fewer than 2 groups the row is
  descriptive (the difference of means, no test), and the summary says so in one line;
- the `matched` arm's single:1 against each arm's primary network (Welch): capacity, not diversity.
The mix groups (their member replicate ids, recorded before validation) are `mix.parquet`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from dnn_search.results.study_record import COPIES_K, MIX_MODE, SCHEMA_VERSION, STUDY_CONTROLS_DIR, StudySpec
from dnn_search.stats import finite_values, format_over_replicates, holm, welch
from dnn_search.study_stats import one_sample

FAMILY = "controls"
MIX_RECORD = "mix.json"  # written by the driver (search/study_controls.py) before validation
COPIES_CHECK = "copies_check.json"


def read_mix_record(exp_dir: Path) -> dict | None:
    path = Path(exp_dir) / STUDY_CONTROLS_DIR / MIX_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def mix_rows(exp_dir: Path, obs: dict, val: dict, scale) -> list[dict]:
    """One row per mix group: its arm, the n = 1 replicates it mixes, and the mean over its seeds."""
    record = read_mix_record(exp_dir)
    if record is None:
        return []
    rows = []
    for arm, info in record["arms"].items():
        for g, members in enumerate(info["groups"]):
            group = f"{arm}-mix-g{g}"
            value, held = obs.get((group, MIX_MODE), math.nan), val.get((group, MIX_MODE), math.nan)
            rows.append({"schema_version": SCHEMA_VERSION, "arm": arm, "n": int(info["n"]), "group": g,
                         "replicate": group, "reference_arm": record["reference_arm"], "k1": int(record["k1"]),
                         "members": ",".join(members), "seed": int(info["seed"]),
                         f"test_{scale.metric}[{MIX_MODE}]": scale.natural(value) if math.isfinite(value) else math.nan,
                         f"val_{scale.metric}[{MIX_MODE}]": scale.natural(held) if math.isfinite(held) else math.nan})
    return rows


def _row(label: str, diff, scale, kind: str, a: str, b: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "family": FAMILY, "contrast": label, "a": a, "b": b, "test": kind,
            "estimate": diff.estimate, "ci_lo": diff.lo, "ci_hi": diff.hi, "p": diff.p, "n_a": diff.n_a,
            "n_b": diff.n_b, "unit": scale.unit}


def control_comparisons(spec: StudySpec, done: dict[str, list[str]], obs: dict, scale,
                        mix_groups: dict[str, list[str]]) -> list[dict]:
    """The controls family (module docstring). DONE: each arm's completed replicate ids; OBS:
    (replicate, mode) -> the per-replicate mean on the analysis scale; MIX_GROUPS: each arm's
    group ids (the `replicate` of its mix rows)."""
    if not spec.controls:
        return []
    rows: list[dict] = []

    def within(arm, a_mode: str, b_mode: str, what: str):
        d = [obs.get((r, a_mode), math.nan) - obs.get((r, b_mode), math.nan) for r in done[arm.name]]
        rows.append(_row(f"{arm.name}/{a_mode} vs {arm.name}/{b_mode} ({what})", one_sample(d), scale, "one-sample",
                         f"{arm.name}/{a_mode}", f"{arm.name}/{b_mode}"))
    for arm in (a for a in spec.arms if a.n >= 2 and not a.control):
        if spec.controls.get("copies"):
            within(arm, f"copies:{COPIES_K}", f"single:{COPIES_K}", "n blocks of one activation: must be equal")
        if spec.controls.get("random"):
            within(arm, "random:diverse", "random:single", "untrained activations")
            within(arm, "random-scaled:diverse", "random-scaled:single", "untrained, at the learned amplitude")
        if spec.controls.get("mix"):
            groups = mix_groups.get(arm.name, [])
            mixed = [obs.get((g, MIX_MODE), math.nan) for g in groups]
            diverse = [obs.get((r, "diverse"), math.nan) for r in done[arm.name]]
            diff = welch(mixed, diverse)
            descriptive = len(groups) < 2
            row = _row(f"{arm.name}/mix vs {arm.name}/diverse (activations of {arm.n} different n = 1 replicates; "
                       f"{len(groups)} group(s))", diff, scale, "descriptive" if descriptive else "welch",
                       f"{arm.name}/mix", f"{arm.name}/diverse")
            if descriptive:
                row.update(ci_lo=math.nan, ci_hi=math.nan, p=math.nan)
            rows.append(row)
    matched = next((a for a in spec.arms if a.control == "matched"), None)
    if matched is not None:
        ours = [obs.get((r, matched.primary), math.nan) for r in done[matched.name]]
        for arm in (a for a in spec.arms if not a.control):
            theirs = [obs.get((r, arm.primary), math.nan) for r in done[arm.name]]
            rows.append(_row(f"{arm.name}/{arm.primary} vs {matched.name}/{matched.primary} (capacity: Ho = "
                             f"{matched.settings['outer_hidden_size']} in one activation)", welch(theirs, ours),
                             scale, "welch", f"{arm.name}/{arm.primary}", f"{matched.name}/{matched.primary}"))
    for row, p in zip(rows, holm([r["p"] for r in rows])):
        row["holm_p"] = p
    return rows


def mix_lines(exp_dir: Path, spec: StudySpec) -> list[str]:
    """The summary's lines on the mix groups and the copies check (from the study's records)."""
    lines = []
    record = read_mix_record(exp_dir)
    if record is not None:
        for arm, info in record["arms"].items():
            groups = info["groups"]
            shown = "; ".join(f"g{g}: {', '.join(m)}" for g, m in enumerate(groups)) or "none"
            lines.append(f"- mix for {arm}: {len(groups)} disjoint group(s) of {info['n']} from the "
                         f"{record['k1']} completed {record['reference_arm']} replicates ({shown}).")
            if len(groups) < 2:
                lines.append(f"- mix for {arm} is descriptive only: {len(groups)} group(s) (fewer than 2), so "
                             "no test against its diverse network.")
    check = Path(exp_dir) / STUDY_CONTROLS_DIR / COPIES_CHECK
    if check.is_file():
        for arm, c in json.loads(check.read_text()).items():
            lines.append(f"- copies check ({arm}, replicate {c['replicate']}): outputs of copies:{c['k']} and "
                         f"single:{c['k']} before training differ by at most {c['max_abs_difference']:.3g} on "
                         f"{c['batch']} training samples (init seed {c['seed']}).")
    matched = next((a for a in spec.arms if a.control == "matched"), None)
    if matched is not None:
        lines.append(f"- matched: an n = 1 arm whose activation has Ho = {matched.settings['outer_hidden_size']} "
                     f"hidden units ({spec.controls['matched']} × the n = 1 arm's), shown beside the arms above.")
    return lines


def mix_group_ids(exp_dir: Path) -> dict[str, list[str]]:
    record = read_mix_record(exp_dir)
    if record is None:
        return {}
    return {arm: [f"{arm}-mix-g{g}" for g in range(len(info["groups"]))] for arm, info in record["arms"].items()}


def mix_summary(mix, metric: str, log: bool) -> list[str]:
    """The arm table's rows for the mix groups (mean over groups, 95 % CI), from mix.parquet."""
    if mix is None or mix.empty:
        return []
    out = []
    for arm, part in mix.groupby("arm", sort=False):
        values = part[f"test_{metric}[{MIX_MODE}]"]
        if not finite_values(values).size:
            continue
        mean, bounds, spread = format_over_replicates(values, log)
        out.append(f"| {arm} | {int(part['n'].iloc[0])} | {len(part)} mix groups | mix | {mean} {bounds} | "
                   f"{spread} |")
    return out
