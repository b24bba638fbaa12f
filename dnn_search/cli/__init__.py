"""`dnn-search`: the command line. Parsing and dispatch only; the work lives in the jobs modules.
The commands are defined by concept (`science`, `search`, `study`) on shared argument types (`flags`).

Every problem a user can fix ends as one line on stderr and exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from dnn_search import __version__
from dnn_search.errors import UserError

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
  study       a diversity study: arms x meta-seeds, validated per replicate; does diversity help?

inspection commands:
  dashboard   serve optuna-dashboard on a search (live learning curves, trial activation plots)
  report      write a self-contained report.html with figures for a search (and its pipeline)
"""



def _commands() -> list:
    from dnn_search.cli import science, search, study
    return [science._add_metalearn, science._add_validate, science._add_hessian, search._add_dashboard,
            search._add_report, search._add_search, search._add_export, search._add_pipeline, study._add_study]


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
    for add in _commands():
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


def run() -> None:
    """The `dnn-search` command: `main`, then a quick exit. Everything a command writes is written
    (atomically) and closed before `main` returns; the interpreter's own teardown of torch, Ray and
    pandas then took 0.9 s of every command (measured after a search), so after Python's exit
    handlers, logging and the standard streams are flushed, the process ends at once."""
    code = main()
    import atexit
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to say
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
