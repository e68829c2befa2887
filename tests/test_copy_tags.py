"""``epoch copy`` carries tags (DESIGN §8): the imported events are in the destination's tag index, so
``read_query`` answers there as it did in the source. SQLite and memory here; PostgreSQL in its own tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from epoch import EventStore, InvalidEvent, NewEvent, RecordedEvent, open_store
from epoch.cli import app
from epoch.queries import Query, QueryItem
from epoch.stores.copy import copy_store
from epoch.testing import collect

QUERIES = [
    Query([QueryItem(tags=("course:1",))]),
    Query([QueryItem(tags=("course:1", "student:2"))]),
    Query([QueryItem(types=("Subscribed",), tags=("student:2",)), QueryItem(types=("Renamed",))]),
    Query([QueryItem(types=("Defined",))]),
]


async def fill(store: EventStore) -> None:
    """Tagged and untagged events over several streams, one of them soft-deleted."""
    for i in range(12):
        await store.append(
            f"course-{i % 3}",
            [
                NewEvent(
                    "Defined" if i < 3 else "Subscribed", b'{"i": %d}' % i, tags=(f"course:{i % 3}", f"student:{i % 4}")
                ),
                NewEvent("Renamed", b"{}"),
            ],
        )
    await store.append("gone-1", [NewEvent("Subscribed", b"{}", tags=("course:1", "student:2", "gone"))])
    await store.delete_stream("gone-1")


def key(event: RecordedEvent) -> tuple[object, ...]:
    return (event.stream, event.version, event.id, event.type, event.data, event.tags)


async def same_answers(src: EventStore, dst: EventStore) -> None:
    assert [key(e) for e in await collect(dst.read_all())] == [key(e) for e in await collect(src.read_all())]
    for query in QUERIES:
        expected = [key(e) for e in await collect(src.read_query(query))]
        assert expected, query
        assert [key(e) for e in await collect(dst.read_query(query))] == expected, query


async def test_memory_to_sqlite(tmp_path: Path) -> None:
    async with open_store("memory://") as src, open_store(f"sqlite:///{tmp_path / 'dst.db'}") as dst:
        await fill(src)
        result = await copy_store(src, dst, chunk_size=5)
        assert (result.copied, result.timestamps_preserved) == (25, True)
        await same_answers(src, dst)


async def test_sqlite_to_sqlite_resumed(tmp_path: Path) -> None:
    src_url, dst_url = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    async with open_store(src_url) as src:
        await fill(src)
        await src.append("late-1", [NewEvent("Subscribed", b"{}", tags=("student:2", "course:1"))])
    async with open_store(src_url) as src, open_store(dst_url) as dst:
        # An interrupted copy first: the first chunk written, then the run stops.
        def interrupt(copied: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await copy_store(src, dst, chunk_size=10, progress=interrupt)
        assert await dst.head_position() == 10
    # The rest through ``epoch copy`` (in a thread: the command runs its own event loop), which resumes.
    result = await asyncio.to_thread(CliRunner().invoke, app, ["copy", src_url, dst_url, "--json"])
    assert result.exit_code == 0, result.output
    assert (json.loads(result.output)["copied"], json.loads(result.output)["resumed"]) == (16, True)
    async with open_store(src_url) as src, open_store(dst_url) as dst:
        await same_answers(src, dst)
        [late] = await collect(
            dst.read_query(Query([QueryItem(tags=("course:1", "student:2"), types=("Subscribed",))]), after=25)
        )
        assert (late.stream, late.tags) == ("late-1", ("student:2", "course:1"))


async def test_sqlite_to_a_store_that_only_appends(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'src.db'}") as src, open_store("memory://") as dst:
        await fill(src)
        result = await copy_store(src, dst)
        assert (result.copied, result.timestamps_preserved) == (25, False)
        await same_answers(src, dst)


async def test_import_checks_and_de_duplicates_tags(tmp_path: Path) -> None:
    when = datetime(2020, 5, 17, tzinfo=UTC)

    def recorded(version: int, tags: Any) -> RecordedEvent:
        return RecordedEvent("s-1", version, 0, uuid.uuid4(), "T", b"{}", b"", when, tags)

    async with open_store(f"sqlite:///{tmp_path / 'i.db'}") as store:
        importer: Any = store
        with pytest.raises(InvalidEvent) as info:
            await importer.import_events([recorded(0, ("ok",)), recorded(1, ("bad\n",))])
        assert str(info.value) == "s-1: invalid event at index 1: tag 'bad\\n' has leading or trailing whitespace"
        assert await store.head_position() == 0
        await importer.import_events([recorded(0, ("b", "a", "b"))])
        [event] = await collect(store.read_query(Query([QueryItem(tags=("a", "b"))])))
        assert event.tags == ("b", "a")
