"""Given/when/then specifications for deciders, runnable in any test framework (failures are AssertionErrors)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar, cast

from epoch.domain.decider import DeciderLike, decide_events, fold, initial_state_of, is_terminal_state
from epoch.errors import StreamClosed

__all__ = ["DeciderSpec"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")
X = TypeVar("X", bound=BaseException)

_UNSET = object()
SPEC_STREAM = "spec"
"""The stream name in the :class:`StreamClosed` a spec raises for a terminal state."""


def _show(events: Sequence[object]) -> str:
    return "\n".join(f"  [{i}] {event!r}" for i, event in enumerate(events)) or "  (no events)"


@dataclass(frozen=True, slots=True)
class DeciderSpec(Generic[C, S, E]):
    """``DeciderSpec(decider).given([...]).when(command).then([...])``: one decision, checked.

    Each step returns a new spec, so a partial spec can be shared. ``given`` events are folded with
    ``evolve`` from a fresh initial state (or from ``given_state``). As in ``CommandHandler``, a terminal
    state (``is_terminal``) refuses the command with :class:`~epoch.StreamClosed`, and ``services`` is
    passed to ``decide`` only when it is not None. ``then`` also folds the new events, so a failing
    ``evolve`` fails the spec; ``then_state`` checks the state after them.
    """

    decider: DeciderLike[C, S, E]
    events: tuple[E, ...] = ()
    state: object = _UNSET
    command: object = _UNSET
    services: object = None

    def given(self, events: Iterable[E]) -> DeciderSpec[C, S, E]:
        """Past events of the stream, appended to any given before."""
        return replace(self, events=(*self.events, *events))

    def given_state(self, state: S) -> DeciderSpec[C, S, E]:
        """Start from ``state`` instead of a fresh initial state (``given`` events then apply to it)."""
        return replace(self, state=state)

    def when(self, command: C, services: object = None) -> DeciderSpec[C, S, E]:
        """The command to decide, with optional services for a three-argument ``decide``."""
        return replace(self, command=command, services=services)

    def then(self, events: Iterable[E]) -> None:
        """Assert that the decision is exactly ``events``, in order."""
        expected, actual = list(events), self._decide("events")
        if actual != expected:
            raise AssertionError(f"wrong events\nexpected:\n{_show(expected)}\nactual:\n{_show(actual)}")

    def then_nothing(self) -> None:
        """Assert that the decision is empty (nothing to do)."""
        self.then([])

    def then_state(self, state: S) -> None:
        """Assert the state after the given events and the decided ones."""
        actual = fold(self.decider, self._state(), self._decide("a state"))
        if actual != state:
            raise AssertionError(f"wrong state\nexpected: {state!r}\nactual:   {actual!r}")

    def then_raises(self, exc_type: type[X]) -> X:
        """Assert that deciding raises ``exc_type`` (or a subclass) and return the exception."""
        self._require_command()
        try:
            events = self._run()
        except exc_type as exc:
            return exc
        except BaseException as exc:
            raise AssertionError(f"expected {exc_type.__name__}, but {type(exc).__name__} was raised: {exc}") from exc
        raise AssertionError(f"expected {exc_type.__name__}, but decide returned\n{_show(events)}")

    def _state(self) -> S:
        start = initial_state_of(self.decider) if self.state is _UNSET else cast(S, self.state)
        return fold(self.decider, start, self.events)

    def _require_command(self) -> None:
        if self.command is _UNSET:
            raise AssertionError("call .when(command) before .then...()")

    def _run(self) -> list[E]:
        self._require_command()
        state = self._state()
        if is_terminal_state(self.decider, state):
            raise StreamClosed(SPEC_STREAM, len(self.events) - 1 if self.events else None)
        events = decide_events(self.decider, cast(C, self.command), state, self.services)
        fold(self.decider, state, events)  # a new event that evolve cannot take fails the spec
        return events

    def _decide(self, wanted: str) -> list[E]:
        try:
            return self._run()
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"expected {wanted}, but {type(exc).__name__} was raised: {exc}") from exc
