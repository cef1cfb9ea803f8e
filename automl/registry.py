"""A small generic registry: the one place that maps names to factories.

Models, losses, optimizers, schedulers, metrics, datasets, samplers and pruners each
get one ``Registry`` instance. Adding an entry is one decorated function.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised when a name is not registered; the message lists the valid choices."""


class Registry(Generic[T]):
    """Maps names to entries (usually factory functions) of one kind.

    Args:
        kind: What the entries are, e.g. ``"model"``; used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Returns a decorator that registers its argument under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """

        def decorator(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorator

    def add(self, name: str, entry: T) -> None:
        """Registers ``entry`` under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """Returns the entry registered under ``name``.

        Raises:
            UnknownNameError: If nothing is registered under ``name``.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def validate(self, name: str) -> str:
        """Returns ``name`` if registered (usable as a pydantic ``AfterValidator``).

        Raises:
            UnknownNameError: If nothing is registered under ``name``.
        """
        self.get(name)
        return name

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._entries)

    def unknown_message(self, name: object) -> str:
        """Builds the error message for an unknown ``name``, with the valid choices."""
        message = f"unknown {self.kind} {name!r}"
        if isinstance(name, str):
            close = difflib.get_close_matches(name, self._entries, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return f"{message}; valid choices: {', '.join(self.names())}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
