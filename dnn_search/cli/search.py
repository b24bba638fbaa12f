"""The search commands: `search`, `export`, `pipeline`, and the inspection commands `dashboard` and
`report` (Ray Tune schedules the trials, Optuna samples them; results in STORAGE/NAME/)."""
from __future__ import annotations

import argparse

from dnn_search.cli.flags import nonneg_float, positive_int, str2bool
from dnn_search.errors import UserError


def _add_dashboard(sub) -> None:
    p = sub.add_parser(
        "dashboard", help="serve optuna-dashboard on a search's study (live or finished)",
        description="Serve optuna-dashboard (history, learning curves, parallel coordinates, importance, each "
                    "trial's activation plot) on the Optuna study of a search, while it runs and after it. "
                    "Binds to 127.0.0.1 unless --host says otherwise; Ctrl-C stops it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name_or_dir", metavar="NAME_OR_DIR", help="search name under --storage, or its results folder")
    p.add_argument("--storage", default="results", help="root folder of the searches")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface, no auth)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: pick a free one)")
    p.set_defaults(handler=_run_dashboard)


def _run_dashboard(args) -> None:
    from dnn_search.results.dashboard import run_dashboard
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    run_dashboard(args.name_or_dir, storage=args.storage, host=args.host, port=args.port)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="write report.html (self-contained) and report_figures/*.png for a search",
        description="Write NAME_OR_DIR/report.html, one self-contained file (images embedded, no network): the "
                    "top trials' activations, learning curves of all trials, hyperparameter importance and "
                    "views, and after a pipeline the validation comparison, Hessian spectral densities and the "
                    "summary table. The figures are also written as PNGs to NAME_OR_DIR/report_figures/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name_or_dir", metavar="NAME_OR_DIR", help="search name under --storage, or its results folder")
    p.add_argument("--storage", default="results", help="root folder of the searches")
    p.add_argument("--top", type=positive_int, default=4, help="number of top trials whose activations are shown")
    p.set_defaults(handler=_run_report)


def _run_report(args) -> None:
    from dnn_search.results.report import run_report
    run_report(args.name_or_dir, storage=args.storage, top=args.top)



def _add_search_options(p, pipeline: bool = False) -> None:
    p.add_argument("--space", default=None, metavar="FILE.yaml",
                   help="search space file (see search_spaces/); not needed with --resume")
    p.add_argument("--name", required=True, help="search name: folder STORAGE/NAME and Optuna study name")
    p.add_argument("--storage", default="results", help="root folder of the results")
    p.add_argument("--num-samples", type=positive_int, default=None, help="number of trials (default: the space's)")
    p.add_argument("--max-concurrent", type=positive_int, default=None,
                   help="trials running at once (default: the space's, else as resources allow)")
    p.add_argument("--cpus-per-trial", type=nonneg_float, default=None,
                   help="CPUs per trial (fractional allowed; torch uses that many threads)")
    p.add_argument("--gpus-per-trial", type=nonneg_float, default=None,
                   help="GPUs per trial; fractional so several small trials share one GPU")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:10001 "
                        "(default: an embedded local Ray started and stopped by the command)")
    p.add_argument("--resume", action="store_true", help="continue the recorded search NAME where it stopped")
    p.add_argument("--max-failures", type=int, default=None, metavar="N",
                   help="times Ray retries a crashed trial from its last checkpoint (default: the space's, 2)")
    p.add_argument("--top", type=positive_int, default=None, help="best trials to export (default: the space's, 3)")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="Optuna storage URL (e.g. postgresql://...; default: STORAGE/NAME/optuna_journal.log)")
    p.add_argument("--data-path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.add_argument("--dashboard", action="store_true",
                   help="serve optuna-dashboard on the study while the command runs (127.0.0.1)")
    p.add_argument("--dashboard-port", type=int, default=8080, metavar="PORT",
                   help="port of --dashboard (0: any free port)")
    if pipeline:
        p.add_argument("--runs", type=positive_int, default=None, help="validation seeds per mode")
        p.add_argument("--datasets", default=None, help="validation datasets, e.g. MNIST1D,MNIST,CIFAR")
        p.add_argument("--hessian", type=str2bool, nargs="?", const=True, default=None, metavar="BOOL",
                       help="run Hessian trials (default: the space's)")
        p.add_argument("--optimizers", default=None, metavar="LIST",
                       help="validation optimisers, e.g. sgd,rmsprop (sgd: heavy-ball momentum; rmsprop: the "
                            "meta-learning inner update); their settings come from the space's pipeline.optimizers")


def _search_options(args, pipeline: bool = False):
    from dnn_search.search.options import Options
    datasets = None
    if pipeline and args.datasets is not None:
        from dnn_search.search.pipeline_spec import parse_datasets
        datasets = parse_datasets(args.datasets)
    return Options(name=args.name, space_path=args.space, storage=args.storage, num_samples=args.num_samples,
                   max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                   gpus_per_trial=args.gpus_per_trial, address=args.address, resume=args.resume, top=args.top,
                   optuna_storage=args.optuna_storage, data_path=args.data_path, quiet=args.quiet,
                   runs=getattr(args, "runs", None), datasets=datasets, hessian=getattr(args, "hessian", None),
                   optimizers=(None if getattr(args, "optimizers", None) is None
                               else [o.strip().lower() for o in args.optimizers.split(",") if o.strip()]),
                   max_failures=args.max_failures, dashboard=args.dashboard, dashboard_port=args.dashboard_port)


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="hyperparameter search of the meta-learning (Ray Tune + Optuna)",
        description="Run a search described by a YAML space file: Optuna samples each trial's hyperparameters, "
                    "Ray Tune runs the meta-learning trials (locally or on a cluster) and ASHA stops poor ones. "
                    "Writes STORAGE/NAME/: trials.parquet, steps.parquet, the Optuna study, and the top trials' "
                    "activations. Flags override the space file.")
    _add_search_options(p)
    p.set_defaults(handler=_run_search)


def _run_search(args) -> None:
    from dnn_search.search.driver import run_search
    run_search(_search_options(args))


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write the best trials' activations for `validate`",
        description="Write the activation files (.txt original format, .npz exact weights, .json metadata, "
                    "plus metadata.json and activations.png) of the best trials of a search into OUT/<trial_id>/.")
    p.add_argument("search", metavar="NAME_OR_DIR", help="search name (under --storage) or its results folder")
    p.add_argument("--top", type=positive_int, default=3, help="number of best trials")
    p.add_argument("--out", default=None, help="output folder (default: the search's activations/)")
    p.add_argument("--storage", default="results", help="root folder of the results")
    p.set_defaults(handler=_run_export)


def _run_export(args) -> None:
    from dnn_search.search.driver import export
    export(args.search, args.top, args.out, args.storage)


def _add_pipeline(sub) -> None:
    p = sub.add_parser(
        "pipeline", help="search -> export -> validation -> Hessian -> summary, all on Ray",
        description="Run a search, export the top trials, then validation trials (every exported trial x mode "
                    "(pure, single:k, diverse) x dataset x seed) and Hessian trials (one model per trial, mode "
                    "and dataset), all scheduled by Ray Tune on the same cluster. Writes validation.parquet, "
                    "hessian.parquet and summary.md next to the search results.")
    _add_search_options(p, pipeline=True)
    p.set_defaults(handler=_run_pipeline)


def _run_pipeline(args) -> None:
    from dnn_search.search.pipeline import run_pipeline
    run_pipeline(_search_options(args, pipeline=True))
