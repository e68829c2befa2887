"""What counts as a projection's failure, and how it is put into words that every store can keep."""

from __future__ import annotations

import asyncio

__all__ = ["cancelling", "describe", "storable"]


def cancelling() -> bool:
    """Whether the running task is being cancelled itself.

    A ``CancelledError`` raised while it is not came from a task the handler awaited (which someone else
    cancelled): it is the handler's failure, retried and then stopped or parked like any other.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def storable(text: str) -> str:
    """``text`` with lone surrogates (an error quoting user data) escaped as ``\\udXXX``: UTF-8 encodable,
    so SQLite, PostgreSQL and JSON keep it. Every error text a parking lot or checkpoint store keeps goes
    through here."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(error: BaseException) -> str:
    """``Type: message`` for a handler's error, storable; ``Type: <unprintable>`` when its ``str`` fails."""
    try:
        text = str(error)
    except Exception:
        text = "<unprintable>"
    return storable(f"{type(error).__name__}: {text}")
