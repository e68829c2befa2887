"""Process managers: a saga reacts to events with commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Saga"]

E = TypeVar("E")
C = TypeVar("C")
C2 = TypeVar("C2")


@dataclass(frozen=True, slots=True)
class Saga(Generic[E, C]):
    """``react(event) -> commands``: what to do next when an event happens (empty for nothing).

    A saga sees every event its runner feeds it, so ``react`` ignores the events it does not care about.
    """

    react: Callable[[E], Iterable[C]]

    def combine(self, other: Saga[E, C2]) -> Saga[E, C | C2]:
        """React with both sagas: this one's commands first, then ``other``'s."""
        first, second = self.react, other.react

        def react(event: E) -> list[C | C2]:
            return [*first(event), *second(event)]

        return Saga(react)
