"""`dnn-search`: the command line. Parsing and dispatch only; the work lives in the jobs modules.

Every problem a user can fix ends as one line on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path

from dnn_search import __version__, checks
from dnn_search.errors import UserError
# The metalearn flags are generated from MetaConfig, so the parser needs it (and torch) anyway; the
# jobs and orchestration modules stay lazy: a command imports only what it runs.
from dnn_search.metalearn import MetaConfig

DESCRIPTION = """\
Meta-learn diverse neuron activation functions ("Neural networks embrace diversity",
arXiv 2204.04348) and search their hyperparameters at scale.

science commands (one configuration at a time, original DiversityNN flags):
  metalearn   meta-learn --n_activations activations on a dataset
  validate    retrain ordinary networks with learned activations (pure/single/diverse)
  hessian     Hessian eigenvalues, trace and spectral density of a saved validation model

search commands (Ray Tune schedules the trials, Optuna samples them; results in STORAGE/NAME/):
  search      run a hyperparameter search from a search_spaces/*.yaml file (local Ray or --address)
  export      write the best trials' activation files (.txt/.npz/.json) for `validate`
  pipeline    search -> export -> validation trials -> Hessian trials -> summary.md

inspection commands:
  dashboard   serve optuna-dashboard on a search (live learning curves, trial activation plots)
  report      write a self-contained report.html with figures for a search (and its pipeline)
"""


def str2bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _flag(parser, name: str, help_text: str) -> None:
    """A boolean that works both as `--name` and as the original `--name True`."""
    parser.add_argument(name, type=str2bool, nargs="?", const=True, default=False, metavar="BOOL", help=help_text)


_CONVERTERS = {"int": (int, "an integer"), "float": (float, "a number"), "str": (str, "text")}


def checked(kind: str, check=None):
    """An argparse type: convert to `kind` ('int', 'float', 'str'), then apply `check` (a
    dnn_search.checks function); a bad value is an argparse error (one line, exit status 2)."""
    convert, what = _CONVERTERS[kind]

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
        return value
    parse.__name__ = kind  # argparse names the type in its messages
    return parse


_positive_int = checked("int", checks.positive_int)
_nonneg_float = checked("float", checks.non_negative_number)


def _add_device(parser) -> None:
    _flag(parser, "--use_gpu", "run on a CUDA GPU (default: CPU)")
    parser.add_argument("--gpu_no", type=int, default=0, help="CUDA device index with --use_gpu (default 0)")


def _add_config_flags(parser, config_class) -> None:
    """One flag per dataclass field, named after it, with the field's default, help and check."""
    for f in dataclasses.fields(config_class):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        help_text, choices = f.metadata.get("help", ""), f.metadata.get("choices")
        if choices is not None:
            help_text = f"{help_text} (one of: {', '.join(choices())})"
        parser.add_argument(f"--{f.name}", type=checked(kind, f.metadata.get("check")), default=f.default,
                            help=help_text)


def _add_metalearn(sub) -> None:
    p = sub.add_parser(
        "metalearn", help="meta-learn activation functions (docs/design.md)",
        description="Meta-learn n activation functions f_i(x) = base(x) + 0.2 g_i(x): at every outer step a "
                    "fresh network is trained with a differentiable RMSprop, and the exact meta-gradient of "
                    "its mean training loss updates the activations. Writes the original .txt file plus an "
                    ".npz (exact weights) and a .json (metadata) under --output_folder. The dataset fixes "
                    "the task (its loss and metrics).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_flags(p, MetaConfig)
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files (and the MNIST-1D cache)")
    p.add_argument("--output_folder", default="results/metalearn", help="where the activation files go")
    p.add_argument("--runs", type=_positive_int, default=1, help="independent runs (run r uses seed + r)")
    _add_device(p)
    _flag(p, "--verbose", "print progress lines more often")
    _flag(p, "--save_curve", "also write STEM_curve.csv: one row per step (meta-loss, gradient norms, metrics)")
    _flag(p, "--save_model", "also write STEM_state.pt: the full learner state (weights, momentum, RNG)")
    p.set_defaults(handler=_run_metalearn)


def _run_metalearn(args) -> None:
    from dnn_search import jobs
    cfg = MetaConfig.from_dict(vars(args))
    jobs.metalearn(cfg, runs=args.runs, data_path=args.data_path, output_folder=args.output_folder,
                   use_gpu=args.use_gpu, gpu_no=args.gpu_no, save_curve=args.save_curve,
                   save_model=args.save_model, verbose=args.verbose)


def _add_validate(sub) -> None:
    p = sub.add_parser(
        "validate", help="retrain ordinary networks with learned activations (docs/design.md)",
        description="Train D -> 200 -> C networks using the base function (pure), a standard activation of the "
                    "field (std:relu, std:gelu, std:silu, std:tanh, std:elu), one learned "
                    "activation on every neuron (single k) or all of them in blocks (diverse), over --runs seeds, "
                    "and report mean ± std of the task's metrics on the test split and on a validation split "
                    "carved from the training data and never trained on (accuracy and loss for classification). "
                    "The same seed gives every mode the same initialisation and batch order. "
                    "Writes validation.parquet. Flags left unset "
                    "are taken from the activation file's metadata (or its original file name).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--act_path", required=True, help="activation file: our .npz (exact) or an original .txt (interpolated)")
    p.add_argument("--validation_mode", default="all",
                   help="comma-separated: pure, std:<relu|gelu|silu|tanh|elu>, std (all five), diverse (or 0/false), "
                        "k (1-based single activation), or all (pure, std, every k, and diverse when n >= 2)")
    p.add_argument("--dataset", default=None, help="a registered dataset (default: the file's)")
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--activation", default=None, help="base function, if the file does not say")
    p.add_argument("--runs", type=_positive_int, default=5, help="seeds per mode")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: file's or 5)")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop"), default="sgd",
                   help="sgd: heavy-ball momentum (the original's validation); rmsprop: exactly the meta-learning "
                        "inner update (v starts at 1, eps outside the root, decay --inner_mu)")
    p.add_argument("--inner_lr", type=float, default=None, help="learning rate (default: file's or 0.01)")
    p.add_argument("--inner_mu", type=float, default=None,
                   help="SGD momentum, or rmsprop's decay (default: file's or 0.8)")
    p.add_argument("--inner_batch_size", type=_positive_int, default=None, help="batch size (default: 200)")
    p.add_argument("--inner_hidden_size", type=_positive_int, default=None, help="hidden neurons (default: 200)")
    p.add_argument("--val_fraction", type=checked("float", checks.unit_interval), default=0.1,
                   help="share of the training data held out (never trained on) for the val_* metrics that "
                        "comparisons pick on (0: train on all of it, no val_* metrics)")
    p.add_argument("--rollout_steps", type=_positive_int, default=None,
                   help="forecast horizon in time steps, for tasks with trajectories (default: a test "
                        "trajectory's whole length)")
    p.add_argument("--rollout_trajectories", type=_positive_int, default=None,
                   help="test trajectories forecast, for tasks with trajectories (default: all)")
    p.add_argument("--output_folder", default=None, help="default: the activation file's folder")
    _add_device(p)
    _flag(p, "--save_curve", "store the per-epoch test metrics in validation.parquet")
    _flag(p, "--save_model", "save each trained network (state dict + .json) under OUTPUT/models/")
    p.set_defaults(handler=_run_validate)


def _run_validate(args) -> None:
    from dnn_search import jobs
    jobs.validate(args.act_path, validation_mode=args.validation_mode, dataset=args.dataset,
                  data_path=args.data_path, runs=args.runs, seed=args.seed, epochs=args.epochs, lr=args.inner_lr,
                  momentum=args.inner_mu, batch_size=args.inner_batch_size, hidden_size=args.inner_hidden_size,
                  activation=args.activation, output_folder=args.output_folder, use_gpu=args.use_gpu,
                  gpu_no=args.gpu_no, save_curve=args.save_curve, save_model=args.save_model,
                  val_fraction=args.val_fraction, optimizer=args.optimizer, rollout_steps=args.rollout_steps,
                  rollout_trajectories=args.rollout_trajectories)


def _add_hessian(sub) -> None:
    p = sub.add_parser(
        "hessian", help="Hessian spectrum of a saved validation model (docs/design.md)",
        description="Top-k Hessian eigenvalues (power iteration), trace (Hutchinson) and spectral density "
                    "(stochastic Lanczos quadrature) of a model saved by `validate --save_model`, on a seeded "
                    "sample of the training split, with PyHessian. Writes MODEL_hessian.json and MODEL_density.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="a .pt written by validate --save_model")
    p.add_argument("--act_path", default=None,
                   help="activation file to rebuild the network from when the model's .json is missing")
    p.add_argument("--dataset", default=None, help="default: the model's dataset")
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--num_samples", type=_positive_int, default=1000, help="training samples in the loss")
    p.add_argument("--top_k", type=_positive_int, default=3, help="number of top eigenvalues")
    p.add_argument("--iters", type=_positive_int, default=100, help="iterations (power, Hutchinson, Lanczos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_folder", default=None, help="default: the model's folder")
    _add_device(p)
    p.set_defaults(handler=_run_hessian)


def _run_hessian(args) -> None:
    from dnn_search import jobs
    jobs.hessian(args.model_path, act_path=args.act_path, dataset=args.dataset, data_path=args.data_path,
                 num_samples=args.num_samples, top_k=args.top_k, iters=args.iters, seed=args.seed,
                 use_gpu=args.use_gpu, gpu_no=args.gpu_no, output_folder=args.output_folder)


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
    p.add_argument("--top", type=_positive_int, default=4, help="number of top trials whose activations are shown")
    p.set_defaults(handler=_run_report)


def _run_report(args) -> None:
    from dnn_search.results.report import run_report
    run_report(args.name_or_dir, storage=args.storage, top=args.top)



def _add_search_options(p, pipeline: bool = False) -> None:
    p.add_argument("--space", default=None, metavar="FILE.yaml",
                   help="search space file (see search_spaces/); not needed with --resume")
    p.add_argument("--name", required=True, help="search name: folder STORAGE/NAME and Optuna study name")
    p.add_argument("--storage", default="results", help="root folder of the results")
    p.add_argument("--num-samples", type=_positive_int, default=None, help="number of trials (default: the space's)")
    p.add_argument("--max-concurrent", type=_positive_int, default=None,
                   help="trials running at once (default: the space's, else as resources allow)")
    p.add_argument("--cpus-per-trial", type=_nonneg_float, default=None,
                   help="CPUs per trial (fractional allowed; torch uses that many threads)")
    p.add_argument("--gpus-per-trial", type=_nonneg_float, default=None,
                   help="GPUs per trial; fractional so several small trials share one GPU")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:10001 "
                        "(default: an embedded local Ray started and stopped by the command)")
    p.add_argument("--resume", action="store_true", help="continue the recorded search NAME where it stopped")
    p.add_argument("--max-failures", type=int, default=None, metavar="N",
                   help="times Ray retries a crashed trial from its last checkpoint (default: the space's, 2)")
    p.add_argument("--top", type=_positive_int, default=None, help="best trials to export (default: the space's, 3)")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="Optuna storage URL (e.g. postgresql://...; default: STORAGE/NAME/optuna_journal.log)")
    p.add_argument("--data-path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--quiet", action="store_true", help="no progress table")
    p.add_argument("--dashboard", action="store_true",
                   help="serve optuna-dashboard on the study while the command runs (127.0.0.1)")
    p.add_argument("--dashboard-port", type=int, default=8080, metavar="PORT",
                   help="port of --dashboard (0: any free port)")
    if pipeline:
        p.add_argument("--runs", type=_positive_int, default=None, help="validation seeds per mode")
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
    p.add_argument("--top", type=_positive_int, default=3, help="number of best trials")
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
    p.add_argument("--max-concurrent", type=_positive_int, default=None, help="trials at once (default: the file's)")
    p.add_argument("--data-path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--quiet", action="store_true", help="less progress output")
    p.set_defaults(handler=_run_study)


def _run_study(args) -> None:
    from dnn_search.search.study_run import StudyOptions, run_study
    run_study(StudyOptions(name=args.name, space_path=args.space, storage=args.storage, address=args.address,
                           resume=args.resume, dry_run=args.dry_run, quiet=args.quiet,
                           max_concurrent=args.max_concurrent, data_path=args.data_path))


COMMANDS = [_add_metalearn, _add_validate, _add_hessian, _add_dashboard, _add_report,
            _add_search, _add_export, _add_pipeline, _add_study]


class _Parser(argparse.ArgumentParser):
    """Bad flags end like every other user error: one line on stderr, exit status 2 (`--help`
    shows the usage)."""

    def error(self, message: str):
        # "argument --top: must be ..." -> "--top must be ...", the wording of the config checks
        message = re.sub(r"^argument (-[^:/ ]+)(?:/[^:]+)?: ", r"\1 ", message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dnn-search", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dnn-search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        _add_cache_dir(command)
    return parser


# The folder each command keeps its caches under unless --cache-dir says otherwise: inside what the
# command writes (its --output_folder, or --storage), never the user's home.
_CACHE_ROOT = {
    "metalearn": lambda a: a.output_folder,
    "validate": lambda a: a.output_folder or Path(a.act_path).parent,
    "hessian": lambda a: a.output_folder or Path(a.model_path).parent,
    "dashboard": lambda a: _search_root(a.name_or_dir, a.storage),
    "report": lambda a: _search_root(a.name_or_dir, a.storage),
    "export": lambda a: _search_root(a.search, a.storage),
}


def _search_root(name_or_dir: str, storage: str) -> Path:
    """The storage root of a search named by NAME or by its folder."""
    path = Path(name_or_dir)
    return path.resolve().parent if path.is_dir() else Path(storage)


def _add_cache_dir(parser) -> None:
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="folder for caches (generated data, matplotlib's font list); default: .cache "
                             "inside --output_folder or --storage (or $DNN_SEARCH_CACHE when set)")


def configure_logging() -> None:
    """The package's library modules report through `logging`: their progress (INFO) goes to stdout
    as plain lines, warnings and errors to stderr. Replaces the handlers of an earlier call, so that
    an in-process caller (a test capturing sys.stdout) gets the current streams."""
    package = logging.getLogger("dnn_search")
    for handler in [h for h in package.handlers if h.get_name() in ("dnn-search:out", "dnn-search:err")]:
        package.removeHandler(handler)
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.set_name("dnn-search:out")
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    out.setFormatter(logging.Formatter("%(message)s"))
    err.set_name("dnn-search:err")
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package.addHandler(out)
    package.addHandler(err)
    package.setLevel(logging.INFO)
    package.propagate = False


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        from dnn_search.cache import use_cache_dir
        use_cache_dir(args.cache_dir, _CACHE_ROOT.get(args.command, lambda a: a.storage)(args))
        args.handler(args)
    except UserError as exc:
        print(f"dnn-search {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnn-search {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
