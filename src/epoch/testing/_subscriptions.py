"""Subscription helpers the contract suite's modules share: take what a subscription delivers, watch a
quiet one, and what epoch logged meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from epoch.records import RecordedEvent
from epoch.stores import EventStore

if TYPE_CHECKING:
    import pytest

__all__ = ["logged_warnings", "quiet", "take"]


def logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What epoch logged at WARNING or above (a store retrying in a loop logs each attempt)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("epoch")]


async def take(store: EventStore, count: int, **kwargs: Any) -> list[RecordedEvent]:
    """The first ``count`` events ``subscribe(**kwargs)`` delivers."""
    subscription = store.subscribe(**kwargs)
    seen: list[RecordedEvent] = []

    async def consume() -> None:
        async for event in subscription:
            seen.append(event)
            if len(seen) == count:
                return

    try:
        await asyncio.wait_for(consume(), 30.0)
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
    return seen


async def quiet(store: EventStore, seconds: float, **kwargs: Any) -> list[RecordedEvent]:
    """What ``subscribe(**kwargs)`` delivers within ``seconds`` (errors propagate)."""
    subscription = store.subscribe(**kwargs)
    seen: list[RecordedEvent] = []

    async def consume() -> None:
        async for event in subscription:
            seen.append(event)

    task = asyncio.ensure_future(consume())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if done:
            task.result()  # an error (or an end) is a failure: re-raise it
            raise AssertionError("the subscription ended on its own")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await subscription.aclose()  # type: ignore[attr-defined]
    return seen
