"""Value checks shared by configurations and the command line.

A check takes a value already converted to its type and raises ValueError with a short description
of what is expected ("must be a positive integer"); the caller adds the name and the value, as a
UserError for configurations and as an argparse error (exit status 2) on the command line. One
check thus gives the same rule and the same wording everywhere.
"""
from __future__ import annotations

import math


def positive_int(value: int) -> None:
    if value < 1:
        raise ValueError("must be a positive integer")


def positive_number(value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number")


def non_negative_number(value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a non-negative number")


def unit_interval(value: float) -> None:
    """[0, 1): momenta, noise amplitude, held-out fractions."""
    if not 0 <= value < 1:
        raise ValueError("must be in [0, 1)")


def one_of(choices) -> callable:
    def check(value) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
    return check
