"""A study's replicates as Optuna trials, so that optuna-dashboard shows them beside any search:
parameters `arm` and `meta_seed`, the held-out metric at every outer step as intermediate values,
the last one as the value; a FAILED replicate is a FAIL trial with its reason. Nothing is sampled:
the trials are added as they finished (`study.add_trial`), once each (a resume adds only new ones).
"""
from __future__ import annotations

import json
from pathlib import Path

from dnn_search.replicate import STEPS_FILE, read_result
from dnn_search.results.storage import open_storage, storage_spec
from dnn_search.results.study_record import StudySpec, replicate_folder


def record_replicates(exp_dir: Path, name: str, spec: StudySpec, reps) -> int:
    """Add the finished replicates among REPS that the study NAME does not hold yet; returns how many."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from dnn_search.tasks import task_for_dataset
    task = task_for_dataset(spec.dataset)
    metric = task.search_metric
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec(exp_dir, None))
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="maximize" if task.search_mode == "max" else "minimize")
    known = {t.user_attrs.get("replicate") for t in study.get_trials(deepcopy=False)}
    distributions = {"arm": CategoricalDistribution([a.name for a in spec.arms]),
                     "meta_seed": IntDistribution(0, 2**31 - 1)}
    added = 0
    for rep in reps:
        folder = replicate_folder(exp_dir, rep.key)
        result = read_result(folder)
        if result is None or rep.key in known:
            continue
        rows = json.loads((folder / STEPS_FILE).read_text())
        curve = {int(r["step"]): float(r[metric]) for r in rows if r.get(metric) is not None
                 and float(r[metric]) == float(r[metric])}
        completed = result["status"] == "COMPLETED" and curve
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if completed else TrialState.FAIL,
            value=curve[max(curve)] if completed else None,
            params={"arm": rep.arm, "meta_seed": rep.meta_seed}, distributions=distributions,
            intermediate_values=curve,
            user_attrs={"replicate": rep.key, "status": result["status"], "steps": result["steps"],
                        "reason": result.get("reason", ""), "n_activations": spec.arm(rep.arm).n}))
        added += 1
    return added
