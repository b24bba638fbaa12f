"""The `study` command: a diversity study from its file to its answer (docs/design.md, "Diversity
studies")."""
from __future__ import annotations

import argparse

from dnn_search.cli.flags import positive_int


def _add_study(sub) -> None:
    p = sub.add_parser(
        "study", help="a diversity study: arms x meta-seeds, validated per replicate, with the statistics",
        description="Answer whether diverse learned activations beat one shared learned activation, with the "
                    "meta-learning run (meta-seed) as the unit: every arm of the study file (values of "
                    "n_activations, each with its settings) is meta-learned from K meta-seeds to the same number "
                    "of outer steps (no early stopping; a diverging replicate is FAILED, never replaced), each "
                    "replicate is validated with its primary network, each single:k, pure and the std:* baselines "
                    "on R retraining seeds, and the primary contrasts are tested (Welch or one-sample t on the "
                    "per-replicate means, Holm, TOST at the file's margin). Every run is a Ray Tune trial. Writes "
                    "STORAGE/NAME/: replicates.parquet, validation.parquet, comparisons.parquet, summary.md. "
                    "See search_spaces/study_smoke.yaml.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default=None, metavar="FILE.yaml", help="the study file (not needed with --resume)")
    p.add_argument("--name", required=True, help="study name: folder STORAGE/NAME and Optuna study name")
    p.add_argument("--storage", default="results", help="root folder of the results")
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: an embedded local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue the recorded study NAME: finished replicates and trainings are never run again")
    p.add_argument("--dry-run", action="store_true",
                   help="print the number of meta-learning runs and trainings and the core-hours, from unit costs "
                        "measured now on this machine; start nothing")
    p.add_argument("--max-concurrent", type=positive_int, default=None, help="trials at once (default: the file's)")
    p.add_argument("--data-path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--quiet", action="store_true", help="less progress output")
    p.set_defaults(handler=_run_study)


def _run_study(args) -> None:
    from dnn_search.search.study_run import StudyOptions, run_study
    run_study(StudyOptions(name=args.name, space_path=args.space, storage=args.storage, address=args.address,
                           resume=args.resume, dry_run=args.dry_run, quiet=args.quiet,
                           max_concurrent=args.max_concurrent, data_path=args.data_path))
