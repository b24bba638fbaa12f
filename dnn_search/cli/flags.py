"""Argument types and flag builders shared by every command: a bad value is an argparse error (one
line, exit status 2), and a config dataclass's fields become flags with their help and checks."""
from __future__ import annotations

import argparse
import dataclasses

from dnn_search import checks


def str2bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def flag(parser, name: str, help_text: str) -> None:
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


positive_int = checked("int", checks.positive_int)
nonneg_float = checked("float", checks.non_negative_number)


def add_device(parser) -> None:
    flag(parser, "--use_gpu", "run on a CUDA GPU (default: CPU)")
    parser.add_argument("--gpu_no", type=int, default=0, help="CUDA device index with --use_gpu (default 0)")


def add_config_flags(parser, config_class) -> None:
    """One flag per dataclass field, named after it, with the field's default, help and check."""
    for f in dataclasses.fields(config_class):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        help_text, choices = f.metadata.get("help", ""), f.metadata.get("choices")
        if choices is not None:
            help_text = f"{help_text} (one of: {', '.join(choices())})"
        parser.add_argument(f"--{f.name}", type=checked(kind, f.metadata.get("check")), default=f.default,
                            help=help_text)
