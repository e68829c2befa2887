"""The read-side model: a view folds events into a state, and decides nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from epoch.domain.decider import fold, initial_state_of

__all__ = ["View"]

S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class View(Generic[S, E]):
    """A read-side fold: ``evolve(state, event) -> state`` from ``initial_state``.

    ``initial_state`` follows the :class:`~epoch.Decider` rule: a zero-argument callable (a function or a
    class) is called for every fresh state, anything else is the state itself.
    """

    evolve: Callable[[S, E], S]
    initial_state: S | Callable[[], S]

    def fold(self, events: Iterable[E]) -> S:
        """The state after ``events``, starting from a fresh initial state."""
        return fold(self, initial_state_of(self), events)
