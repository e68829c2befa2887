"""What counts as a projection's failure, and how it is put into words that every store can keep."""

from __future__ import annotations

import asyncio

__all__ = ["cancelling"]


def cancelling() -> bool:
    """Whether the running task is being cancelled itself.

    A ``CancelledError`` raised while it is not came from a task the handler awaited (which someone else
    cancelled): it is the handler's failure, retried and then stopped or parked like any other.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
