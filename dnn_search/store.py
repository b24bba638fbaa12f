"""The results of a search on disk: tables, export of the best trials, the pipeline summary.

Layout of `results/NAME/` (the contract the dashboard and the report read):
    search.json           resolved space + options (what `--resume` restarts from)
    optuna_journal.log    the Optuna study (JournalStorage; study name = NAME)
    ray/                  Ray Tune's storage (experiments `search`, `validation`, `hessian`)
    trials.parquet        one row per trial        steps.parquet   one row per (trial, step)
    activations/<trial>/  the top trials' activation files (+ metadata.json, activations.png)
    artifacts/            Optuna artifact store (activation plots attached to the trials)
    validation.parquet, hessian.parquet, summary.md   (pipeline)
Nothing here imports Ray: export and summaries work offline.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from dnn_search.errors import UserError

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.parquet"
STEPS_FILE = "steps.parquet"
JOURNAL_FILE = "optuna_journal.log"
STATUSES = ("COMPLETED", "PRUNED", "FAILED", "RUNNING")
TRIAL_COLUMNS = ("trial_id", "optuna_number", "status", "error", "retries", "node_id", "steps_done", "score",
                 "final_meta_loss", "final_heldout_accuracy", "best_heldout_accuracy", "wall_seconds",
                 "started_at", "ended_at", "checkpoint_path")
STEP_COLUMNS = ("trial_id", "step", "meta_loss", "final_train_loss", "heldout_accuracy", "heldout_loss",
                "grad_norms", "grad_norm", "seconds")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or ".." in name or not _NAME.match(name):
        raise UserError(f"invalid search name {name!r}: use letters, digits, '.', '_' and '-' "
                        "(no '/' or '..'); it names the folder under --storage and the Optuna study")
    return name


def experiment_dir(storage, name: str) -> Path:
    return Path(storage).expanduser().resolve() / check_name(name)


def resolve_experiment(name_or_dir, storage="results") -> Path:
    """`export NAME_OR_DIR`: an existing folder with a search.json, else NAME under --storage."""
    path = Path(name_or_dir).expanduser()
    if (path / SEARCH_FILE).is_file():
        return path.resolve()
    if "/" not in str(name_or_dir):
        candidate = experiment_dir(storage, str(name_or_dir))
        if (candidate / SEARCH_FILE).is_file():
            return candidate
    raise UserError(f"no search found at {name_or_dir!r} (looked for {SEARCH_FILE} there and under {storage}/)")


def read_search(exp_dir: Path) -> dict:
    path = Path(exp_dir) / SEARCH_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no search recorded in {exp_dir} ({SEARCH_FILE} is missing)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or "space" not in data:
        raise UserError(f"{path} is not a search description")
    return data


def write_table(path, rows: list[dict], columns=()) -> None:
    """Parquet, atomically; `columns` first (present even when there are no rows)."""
    import pandas as pd

    from dnn_search.atomic import atomic_path
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = None
    ordered = [c for c in columns] + [c for c in frame.columns if c not in columns]
    with atomic_path(path) as tmp:
        frame[ordered].to_parquet(tmp, index=False)


def read_table(path):
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing: has the search run (or finished)?")
    return pd.read_parquet(path)


# ----------------------------------------------------------------------------- ranking/export

def rank_trials(trials, metric_mode: str, top: int, per: str | None = None):
    """Best first: completed trials by their final score, then pruned ones to fill up to `top`.

    With `per` (a parameter column), the best `top` of each value of that parameter, groups in the
    order of their best trial: e.g. the best homogeneous (n=1) and the best diverse trial.
    """
    import pandas as pd
    ok = trials[trials["status"].isin(["COMPLETED", "PRUNED"]) & trials["checkpoint_path"].notna()
                & (trials["checkpoint_path"].astype(str) != "")].copy()
    finite = [v is not None and math.isfinite(float(v)) for v in ok["score"]]
    ok = ok.loc[pd.Series(finite, index=ok.index, dtype=bool)] if len(ok) else ok
    ok["_completed"] = (ok["status"] == "COMPLETED").astype(int)
    ok["_key"] = ok["score"].astype(float) * (-1 if metric_mode == "max" else 1)
    ok = ok.sort_values(["_completed", "_key"], ascending=[False, True], kind="stable")
    ok = ok.drop(columns=["_completed", "_key"])
    if per is None or per not in ok.columns:
        return ok.head(top)
    return ok.groupby(per, sort=False).head(top)


def _activation_set(state: dict, base: str):
    from dnn_search.activations import ActivationSet
    return ActivationSet.from_tensors(base, {k: state[f"phi.{k}"] for k in ("w1", "b1", "w2", "b2")})


def load_trial_activations(exp_dir: Path, checkpoint_path: str, base: str):
    from dnn_search.trials import load_checkpoint_state
    folder = Path(checkpoint_path)
    if not folder.is_absolute():
        folder = Path(exp_dir) / folder
    root = Path(exp_dir).resolve()
    if root not in folder.resolve().parents:
        # trials.parquet is data: a path in it must not lead the export outside the search's folder
        raise UserError(f"checkpoint path {checkpoint_path!r} in {TRIALS_FILE} is outside {root}: refused")
    try:
        state = load_checkpoint_state(folder)
    except FileNotFoundError:
        raise UserError(f"checkpoint {folder} is missing: the trial's activations cannot be exported") from None
    try:
        return _activation_set(state, base)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {folder}: not a learner state ({' '.join(str(exc).split())[:160]})") from None


def export_trials(exp_dir, top: int, out=None, quiet=False) -> list[dict]:
    """Write the best trials' activations (DESIGN.md §3) into OUT/<trial_id>/; return one dict each."""
    from dnn_search.actfile import original_stem, write_activation_files
    from dnn_search.atomic import atomic_write_text
    from dnn_search.jobs import versions
    from dnn_search.plots import plot_activations

    exp_dir = Path(exp_dir)
    if top < 1:
        raise UserError(f"--top must be a positive integer, got {top}")
    search = read_search(exp_dir)
    space = search["space"]
    trials = read_table(exp_dir / TRIALS_FILE)
    best = rank_trials(trials, space.get("mode", "max"), top, space.get("top_per"))
    if best.empty:
        raise UserError(f"no finished trial with a checkpoint in {exp_dir / TRIALS_FILE}: nothing to export")
    out = Path(out) if out else exp_dir / "activations"
    param_cols = [c for c in trials.columns if c in _config_fields()]
    exported = []
    for rank, (_, row) in enumerate(best.iterrows(), start=1):
        config = {c: _plain(row[c]) for c in param_cols}
        acts = load_trial_activations(exp_dir, row["checkpoint_path"], config.get("activation", "sin"))
        folder = out / str(row["trial_id"])
        steps = int(row["steps_done"]) if row["steps_done"] == row["steps_done"] else config.get("steps")
        stem = original_stem(config.get("dataset", "MNIST1D"), config.get("activation", "sin"), acts.n, "cpu",
                             config.get("seed", 0), config.get("inner_lr"), config.get("outer_lr"), steps, 0)
        metadata = {"config": config, "search": search.get("name"), "trial_id": str(row["trial_id"]),
                    "optuna_number": _plain(row.get("optuna_number")), "rank": rank, "status": row["status"],
                    "metric": space.get("metric"), "mode": space.get("mode"), "score": _plain(row["score"]),
                    "steps_done": steps, "final_meta_loss": _plain(row["final_meta_loss"]),
                    "final_heldout_accuracy": _plain(row["final_heldout_accuracy"]),
                    "best_heldout_accuracy": _plain(row["best_heldout_accuracy"]),
                    "dataset": config.get("dataset"), "activation": config.get("activation"), "run": 0,
                    "versions": versions()}
        paths = write_activation_files(folder, stem, acts, metadata)
        meta_json = json.loads(paths["json"].read_text())
        atomic_write_text(folder / "metadata.json", json.dumps(meta_json, indent=2) + "\n")
        png = plot_activations(acts, folder / "activations.png",
                               f"trial {row['trial_id']}: {acts.n} learned {acts.base} activation(s)")
        exported.append({"trial_id": str(row["trial_id"]), "rank": rank, "folder": folder, "npz": paths["npz"],
                         "txt": paths["txt"], "png": png, "n": acts.n, "score": _plain(row["score"])})
    if not quiet:
        for e in exported:
            print(f"exported #{e['rank']} {e['trial_id']} (n={e['n']}, score {e['score']:.4g}) -> {e['folder']}")
    return exported


def _config_fields() -> set:
    from dnn_search.metalearn import MetaConfig
    return set(MetaConfig().to_dict())


def _plain(value):
    """numpy/pandas scalars -> Python (JSON-friendly)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


# ------------------------------------------------------------------------------------- tables

def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return "" if v is None else str(v)
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _pm(values, scale=1.0, digits=2) -> str:
    import numpy as np
    arr = np.asarray([v for v in values if v is not None and v == v], dtype=float) * scale
    if arr.size == 0:
        return "–"
    std = arr.std(ddof=1) if arr.size > 1 else 0.0
    return f"{arr.mean():.{digits}f} ± {std:.{digits}f}"


def summary_markdown(name: str, validation, hessian, trials) -> str:
    """summary.md: pure, best homogeneous (single:k) and diverse side by side per dataset and trial,
    then every mode in detail (test accuracy %, test loss, Hessian top eigenvalue and trace)."""
    lines = [f"# Summary of `{name}`", "",
             "Test accuracy (%) of ordinary networks retrained with the exported activations: mean ± std over "
             "seeds. *Best homogeneous* is the learned activation `single:k` with the best mean accuracy.", ""]
    header = ("| dataset | trial | n | pure | best homogeneous | diverse | diverse − best homogeneous |")
    lines += [header, "|---|---|---|---|---|---|---|"]
    detail = ["| dataset | trial | mode | runs | test accuracy (%) | test loss | top eigenvalue | trace |",
              "|---|---|---|---|---|---|---|---|"]
    n_of = {}
    if trials is not None and "n_activations" in getattr(trials, "columns", []):
        n_of = dict(zip(trials["trial_id"].astype(str), trials["n_activations"]))
    if validation is None or len(validation) == 0:
        lines.append("| – | – | – | – | – | – | – |")
    else:
        for (dataset, trial_id), group in validation.groupby(["dataset", "trial_id"], sort=False):
            by_mode = {m: g for m, g in group.groupby("mode", sort=False)}
            acc = {m: g["test_accuracy"].astype(float) for m, g in by_mode.items()}
            singles = [m for m in acc if m.startswith("single:")]
            best_single = max(singles, key=lambda m: acc[m].mean()) if singles else None
            delta = (f"{(acc['diverse'].mean() - acc[best_single].mean()) * 100:+.2f}"
                     if best_single and "diverse" in acc else "–")
            lines.append(f"| {dataset} | {trial_id} | {n_of.get(str(trial_id), '')} | "
                         f"{_pm(acc.get('pure', []), 100)} | "
                         f"{(_pm(acc[best_single], 100) + f' ({best_single})') if best_single else '–'} | "
                         f"{_pm(acc.get('diverse', []), 100)} | {delta} |")
            for mode, g in by_mode.items():
                top, trace = "–", "–"
                if hessian is not None and len(hessian):
                    h = hessian[(hessian["trial_id"] == trial_id) & (hessian["dataset"] == dataset)
                                & (hessian["mode"] == mode)]
                    if len(h):
                        top, trace = f"{float(h['top_eigenvalue'].iloc[0]):.4g}", f"{float(h['trace'].iloc[0]):.4g}"
                detail.append(f"| {dataset} | {trial_id} | {mode} | {len(g)} | {_pm(g['test_accuracy'], 100)} | "
                              f"{_pm(g['test_loss'], 1.0, 4)} | {top} | {trace} |")
    if validation is not None and len(validation):
        lines += ["", *_significance(validation)]
    lines += ["", "## Every mode", "", *detail, ""]
    return "\n".join(lines)


def _welch_p(a, b) -> float:
    from scipy.stats import ttest_ind
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def _significance(validation) -> list[str]:
    """Per dataset: the best diverse network against pure and against the best homogeneous one
    (any trial's `single:k`), with Welch's t-test on the per-seed test accuracies."""
    lines = ["## Diverse against the baselines", "",
             "Best of each kind over all exported trials (by mean test accuracy); p: two-sided Welch t-test "
             "over seeds.", "",
             "| dataset | diverse | pure | best homogeneous | p (diverse vs pure) | p (diverse vs best homogeneous) |",
             "|---|---|---|---|---|---|"]
    for dataset, group in validation.groupby("dataset", sort=False):
        runs = {(str(t), m): g["test_accuracy"].astype(float).to_numpy()
                for (t, m), g in group.groupby(["trial_id", "mode"], sort=False)}

        def best(kind):
            keys = [k for k in runs if (k[1].startswith("single:") if kind == "single" else k[1] == kind)]
            return max(keys, key=lambda k: runs[k].mean()) if keys else None
        diverse, pure, single = best("diverse"), best("pure"), best("single")

        def show(key):
            return f"{_pm(runs[key], 100)} ({key[0]} {key[1]})" if key else "–"
        p_pure = f"{_welch_p(runs[diverse], runs[pure]):.3g}" if diverse and pure else "–"
        p_single = f"{_welch_p(runs[diverse], runs[single]):.3g}" if diverse and single else "–"
        lines.append(f"| {dataset} | {show(diverse)} | {show(pure)} | {show(single)} | {p_pure} | {p_single} |")
    return lines
