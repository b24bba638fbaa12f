"""A name -> entry table, the one way the science layer is extended (bases, tasks, datasets).

Adding a base function, a task or a dataset is one `register` call next to its definition, never an
edit of if-chains spread over modules. The tables are the package's only deliberate module-level
state: they are filled at import time by the modules that define the entries, and `registered`
lets a test add an entry for the duration of a `with` block and removes it afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

from dnn_search.errors import UserError

T = TypeVar("T")


def normalise(name: str) -> str:
    """Lookup key: case, '-' and '_' do not matter ('MNIST-1D' == 'mnist1d')."""
    return str(name).upper().replace("-", "").replace("_", "")


class Registry(Generic[T]):
    def __init__(self, kind: str, before_lookup: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, tuple[str, T]] = {}  # key -> (canonical name, entry)
        self._before_lookup = before_lookup

    def register(self, name: str, entry: T, aliases: tuple[str, ...] = (), replace: bool = False) -> T:
        for key in (normalise(name), *map(normalise, aliases)):
            if key in self._entries and not replace and self._entries[key][0] != name:
                raise ValueError(f"{self.kind} {name!r}: the name {key!r} is taken by {self._entries[key][0]!r}")
            self._entries[key] = (name, entry)
        return entry

    def unregister(self, name: str) -> None:
        for key in [k for k, (canonical, _) in self._entries.items() if canonical == name]:
            del self._entries[key]

    @contextmanager
    def registered(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> Iterator[T]:
        self.register(name, entry, aliases)
        try:
            yield entry
        finally:
            self.unregister(name)

    def _ready(self) -> None:
        if self._before_lookup is not None:
            self._before_lookup()

    def canonical(self, name: str) -> str:
        self._ready()
        key = normalise(name)
        if key not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}")
        return self._entries[key][0]

    def get(self, name: str) -> T:
        self._ready()
        return self._entries[normalise(self.canonical(name))][1]

    def names(self) -> list[str]:
        self._ready()
        return list(dict.fromkeys(canonical for canonical, _ in self._entries.values()))

    def __contains__(self, name: str) -> bool:
        self._ready()
        return normalise(name) in self._entries
