"""Where the decision tests run: every store that serves the consistency-boundary entries
(``read_query``, ``append_with_condition``): memory, SQLite and PostgreSQL.

:class:`Yielding` gives the memory store what every other store has by nature, a wait inside each read
and append, so that concurrent decisions on it really interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from epoch import (
    ANY,
    AppendCondition,
    AppendConditionFailed,
    AppendResult,
    EventStore,
    NewEvent,
    Query,
    RecordedEvent,
)
from epoch.records import ExpectedVersionLike
from epoch.testing import collect
from tests.conftest import url_for


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.postgres] if name == "postgres" else []


DCB_BACKENDS = [pytest.param(name, marks=_marks(name)) for name in ("memory", "sqlite", "postgres")]
"""Parameters for a ``dcb_url`` fixture: ``@pytest.fixture(params=DCB_BACKENDS)``."""

SQL_DCB_BACKENDS = [pytest.param(name, marks=_marks(name)) for name in ("sqlite", "postgres")]
"""The stores several OS processes can share."""


def dcb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(request.param, request, tmp_path)


class Yielding:
    """A store whose reads and appends let other tasks run first (``asyncio.sleep(0)``), as I/O would."""

    def __init__(self, store: EventStore) -> None:
        self.inner = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        await asyncio.sleep(0)
        async for recorded in self.inner.read_query(query, after, limit):
            yield recorded
        await asyncio.sleep(0)

    async def read_stream(self, stream: str, **options: Any) -> AsyncIterator[RecordedEvent]:
        await asyncio.sleep(0)
        async for recorded in self.inner.read_stream(stream, **options):
            yield recorded
        await asyncio.sleep(0)

    async def append_with_condition(
        self,
        stream: str,
        events: Iterable[NewEvent],
        condition: AppendCondition,
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        await asyncio.sleep(0)
        return await self.inner.append_with_condition(stream, events, condition, expected_version)


def interleaved(store: EventStore) -> EventStore:
    """``store`` itself, or the memory store wrapped in :class:`Yielding`."""
    if type(store).__name__ == "MemoryEventStore":
        return cast(EventStore, Yielding(store))
    return store


async def check_query_against_log(
    store: EventStore, log: list[RecordedEvent], query: Query, after: int, limit: int | None
) -> None:
    """``read_query`` finds what a filter of the whole log (``log``, as ``read_all`` returned it) finds,
    and a condition on the query fails on the first such event, or holds when there is none."""
    matching = [e for e in log if e.position > after and query.matches(e.type, e.tags)]
    assert await collect(store.read_query(query, after, limit)) == matching[:limit], (query, after, limit)
    first = matching[0].position if matching else None
    try:
        await store.append_with_condition("never-1", [], AppendCondition(query, after))
    except AppendConditionFailed as exc:
        assert exc.position == first is not None, (query, after)
    else:
        assert first is None, (query, after)
