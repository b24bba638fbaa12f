"""Mode: which network a validation trial retrains, as a value rather than a string.

A mode is written `pure` (the base function), `std:<name>` (a standard activation), `single:k`
(learned activation k, 1-based, on every neuron) or `diverse` (all learned activations in blocks).
Tables store that text; every reader parses it here, once, so that the kind of a mode, its index,
its place in tables and figures and its label cannot differ between modules (they did: three
orderings, seventeen string tests). A new kind (a control of the diversity study) is one entry in
KINDS, not a new branch in each consumer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Kind:
    """One kind of mode. `argument`: what follows the colon (None: no colon; "name": a word such as an
    activation's name; "index": a positive integer). `shared`: the network does not depend on the
    learned activations (trained once per base function and settings, shown once in tables).
    `word`: how the summary calls the kind (its picks are "best <word>")."""

    name: str
    order: int
    argument: str | None
    shared: bool
    word: str


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("pure", 0, None, True, "pure"),
    Kind("std", 1, "name", True, "standard"),
    Kind("single", 2, "index", False, "homogeneous"),
    Kind("diverse", 3, None, False, "diverse"),
)}


@dataclass(frozen=True)
class Mode:
    """A parsed mode: `kind` (a KINDS key), `name` (std's activation) or `index` (single's k)."""

    kind: str
    name: str | None = None
    index: int | None = None

    @classmethod
    def parse(cls, text: str | Mode) -> Mode:
        """`pure`, `std:relu`, `single:3`, `diverse` -> Mode; ValueError on anything else (the
        command line's spellings, `all`, `0` ..., are `validation.parse_modes`'s)."""
        if isinstance(text, Mode):
            return text
        head, colon, arg = str(text).partition(":")
        kind = KINDS.get(head)
        if kind is None or bool(colon) != (kind.argument is not None):
            raise ValueError(f"not a validation mode: {text!r}")
        if kind.argument == "index":
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"not a validation mode: {text!r} (the index is 1-based)")
            return cls(head, index=int(arg))
        if kind.argument == "name":
            if not arg:
                raise ValueError(f"not a validation mode: {text!r} (no name after the colon)")
            return cls(head, name=arg)
        return cls(head)

    @classmethod
    def single(cls, k: int) -> Mode:
        return cls("single", index=k)

    @classmethod
    def standard(cls, name: str) -> Mode:
        return cls("std", name=name)

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def shared(self) -> bool:
        """True when the network does not depend on a trial's learned activations (pure, std:*)."""
        return self.spec.shared

    @property
    def word(self) -> str:
        """pure, standard, homogeneous, diverse."""
        return self.spec.word

    def sort_key(self) -> tuple:
        """The one order of modes in tables and figures: pure, std:* (by name), single:k (by k), diverse."""
        return (self.spec.order, self.index or 0, self.name or "")

    def __str__(self) -> str:
        if self.index is not None:
            return f"{self.kind}:{self.index}"
        if self.name is not None:
            return f"{self.kind}:{self.name}"
        return self.kind

    @property
    def label(self) -> str:
        """The mode as tables write it (`single:2`)."""
        return str(self)


def learned_modes(n_activations: int) -> list[Mode]:
    """single:1..n, then diverse when n >= 2 (with one activation the diverse network is single:1)."""
    return [Mode.single(k) for k in range(1, n_activations + 1)] + ([Mode("diverse")] if n_activations > 1 else [])


def sorted_modes(modes: Iterable[str]) -> list[str]:
    """Distinct mode texts in the one order (Mode.sort_key)."""
    return sorted(dict.fromkeys(str(m) for m in modes), key=lambda m: Mode.parse(m).sort_key())


def is_shared(mode: str) -> bool:
    """True for pure and std:* (see Mode.shared)."""
    return Mode.parse(mode).shared
