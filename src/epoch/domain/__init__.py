"""The pure domain model: deciders (write side), views (read side) and sagas (process managers).

Nothing here does I/O, awaits, reads a clock or draws random numbers; those come in through commands.
"""

from epoch.domain.decider import (
    Decide,
    Decider,
    DeciderLike,
    TypeSpec,
    decide_events,
    fold,
    initial_state_of,
    is_terminal_state,
)
from epoch.domain.saga import Saga
from epoch.domain.view import View

__all__ = [
    "Decide",
    "Decider",
    "DeciderLike",
    "Saga",
    "TypeSpec",
    "View",
    "decide_events",
    "fold",
    "initial_state_of",
    "is_terminal_state",
]
