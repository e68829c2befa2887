"""Dynamic consistency boundaries (DESIGN §8), part three: large queries. A query of more than 500 items,
an item of hundreds of types or of well over a thousand tags is answered as any other, by ``read_query``
and by ``append_with_condition`` (whose check stays atomic with its append): a store that turns a query
into SQL must stay within its database's limits (SQLite's: 500 terms in a compound SELECT, an expression
depth of 1,000), not raise ``StoreUnavailable``. The expected answers are :meth:`Query.matches` applied to
the whole log, which the memory store implements directly.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from epoch.errors import AppendConditionFailed
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import RecordedEvent
from epoch.stores import EventStore
from epoch.testing._events import collect
from epoch.testing.contract_dcb import query, requires, tagged

__all__ = ["LargeQueriesContract", "seats"]

TYPES = tuple(f"T{i}" for i in range(600))
TAGS = tuple(f"g{i}" for i in range(1500))


def seats(n: int) -> Query:
    """``n`` items, one per seat ``seat:0`` .. ``seat:{n - 1}``."""
    return Query([QueryItem(tags=(f"seat:{i}",)) for i in range(n)])


QUERIES = {
    "501 items": seats(501),
    "1,200 items": seats(1200),
    "600 types": Query([QueryItem(types=TYPES)]),
    "600 types and a tag": Query([QueryItem(types=TYPES, tags=("seat:3",))]),
    "1,500 tags": Query([QueryItem(tags=TAGS)]),
    "1,500 tags and 600 types": Query([QueryItem(types=TYPES, tags=TAGS)]),
    "1,200 items and 600 types": Query([*seats(1200).items, QueryItem(types=TYPES)]),
}


async def fill(store: EventStore) -> list[RecordedEvent]:
    """Events some of the large queries match, each in a few ways, and decoys next to them; the log."""
    await store.append("seat-0", [tagged("SeatBooked", "seat:0")])
    await store.append("pair-1", [tagged("SeatsBooked", "seat:10", "seat:1100")])  # two items, far apart
    await store.append("types-1", [tagged("T0"), tagged("T599", "seat:3"), tagged("T600")])
    await store.append("all-1", [tagged("T5", *TAGS)])  # every tag of the 1,500
    await store.append("most-1", [tagged("T6", *TAGS[:-1])])  # all but the last: a decoy
    for i in (250, 499, 500, 777, 1199, 1200, 3000):
        await store.append(f"seat-{i}", [tagged("SeatBooked", f"seat:{i}")])
    await store.append("seat-3", [tagged("T700", "seat:3")])
    return await collect(store.read_all())


def matching(log: list[RecordedEvent], q: Query, after: int = 0) -> list[tuple[str, int]]:
    return [(e.stream, e.position) for e in log if e.position > after and q.matches(e.type, e.tags)]


class LargeQueriesContract:
    """Queries past the SQL limits of a naive translation: read and checked as any other."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    @requires("read_query")
    @pytest.mark.parametrize("name", list(QUERIES))
    async def test_large_queries_read_what_they_match(self, store: EventStore, name: str) -> None:
        log = await fill(store)
        q = QUERIES[name]
        expected = matching(log, q)
        assert expected  # each matches something, and leaves decoys out
        assert len(expected) < len(log)
        assert [(e.stream, e.position) for e in await query(store, q)] == expected
        # Paged: a page of two from the first position matched, the middle one and the one before last.
        for index in sorted({0, len(expected) // 2, max(0, len(expected) - 2)}):
            page = await query(store, q, after=expected[index][1], limit=2)
            assert [(e.stream, e.position) for e in page] == expected[index + 1 : index + 3]

    async def test_large_query_answers_are_pinned(self, store: EventStore) -> None:
        """What ``matching`` says, spelled out (``Query.matches`` itself cannot pass by accident)."""
        log = await fill(store)
        streams = {name: [stream for stream, _ in matching(log, q)] for name, q in QUERIES.items()}
        assert streams == {
            "501 items": ["seat-0", "pair-1", "types-1", "seat-250", "seat-499", "seat-500", "seat-3"],
            "1,200 items": [
                "seat-0", "pair-1", "types-1", "seat-250", "seat-499", "seat-500", "seat-777", "seat-1199", "seat-3",
            ],
            "600 types": ["types-1", "types-1", "all-1", "most-1"],
            "600 types and a tag": ["types-1"],
            "1,500 tags": ["all-1"],
            "1,500 tags and 600 types": ["all-1"],
            "1,200 items and 600 types": [
                "seat-0", "pair-1", "types-1", "types-1", "all-1", "most-1",
                "seat-250", "seat-499", "seat-500", "seat-777", "seat-1199", "seat-3",
            ],
        }  # fmt: skip

    @requires("append_with_condition")
    @pytest.mark.parametrize("name", list(QUERIES))
    async def test_large_conditions_refuse_and_accept(self, store: EventStore, name: str) -> None:
        log = await fill(store)
        q = QUERIES[name]
        found = matching(log, q)
        for index, (_, position) in enumerate(found):
            after = None if index == 0 else found[index - 1][1]
            with pytest.raises(AppendConditionFailed) as info:
                await store.append_with_condition("booking-1", [tagged("Booked")], AppendCondition(q, after))
            assert (info.value.stream, info.value.after, info.value.position) == ("booking-1", after, position)
        assert await store.stream_version("booking-1") is None
        result = await store.append_with_condition("booking-1", [tagged("Booked")], AppendCondition(q, found[-1][1]))
        assert result.version == 0
        assert [e.stream for e in await collect(store.read_all(after=log[-1].position))] == ["booking-1"]

    @requires("append_with_condition")
    async def test_large_condition_racing_claimants_exactly_one_wins(self, store: EventStore) -> None:
        """Sixteen claimants of the last seat of a 1,200-item query: its check and its append are one."""
        big = seats(1200)

        async def attempt(i: int) -> str:
            try:
                await store.append_with_condition(
                    f"claim-{i}", [tagged("SeatBooked", "seat:1199", n=i)], AppendCondition(big)
                )
            except AppendConditionFailed:
                return "lost"
            return "won"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert sorted(outcomes) == ["lost"] * 15 + ["won"]
        assert [e.stream for e in await collect(store.read_all())] == [f"claim-{outcomes.index('won')}"]
