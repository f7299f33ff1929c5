"""Adapters found by name. Each integration (tax providers, shop platforms, delivery channels)
keeps one ``Registry``; an adapter module registers itself with ``@registry.register(name)``
and is listed in the registry's ``modules``, which are imported on the first lookup (so the
interfaces import no client library). Adding an adapter is one new module, its tests and one
line in that list."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, modules: tuple[str, ...]) -> None:
        self.what = what
        self.modules = modules
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._entries))

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def _load(self) -> None:
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True
