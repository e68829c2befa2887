"""``copy_store`` / ``epoch copy``: whole stores between backends, order and soft deletes kept, resumable."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from epoch import EventStore, NewEvent, RecordedEvent, open_store
from epoch.cli import app
from epoch.stores.copy import copy_store

pytestmark = [pytest.mark.postgres]


async def fill(store: EventStore) -> None:
    """Streams of several categories, odd bytes, metadata, a fully and a partly deleted stream."""
    for i in range(30):
        await store.append(
            f"{['users', 'orders', 'audit'][i % 3]}-{i % 7}",
            [
                NewEvent("Happened", b'{"i": %d}' % i, b'{"$correlation_id": "c-%d"}' % i),
                NewEvent("Raw", bytes([i, 0, 255])),
            ],
        )
    await store.append("gone-1", [NewEvent("A", b"1"), NewEvent("B", b"2")])
    await store.delete_stream("gone-1")
    await store.append("again-1", [NewEvent("A", b"1")])
    await store.delete_stream("again-1")
    await store.append("again-1", [NewEvent("C", b"3"), NewEvent("D", b"4")])
    await store.append("users-0", [NewEvent("Late", b"{}")])


def key(event: RecordedEvent, with_time: bool = True) -> tuple[object, ...]:
    base = (event.stream, event.version, event.id, event.type, event.data, event.metadata)
    return (*base, event.recorded_at) if with_time else base


async def snapshot(store: EventStore, with_time: bool = True) -> dict[str, object]:
    events = [e async for e in store.read_all()]
    streams = sorted({e.stream for e in events})
    return {
        "log": [key(e, with_time) for e in events],
        "streams": {s: [key(e, with_time) async for e in store.read_stream(s)] for s in streams},
        "versions": {s: await store.stream_version(s) for s in streams},
    }


async def test_memory_to_postgres_to_postgres(pg_dsn: str, other_pg_dsn: str) -> None:
    async with open_store("memory://") as src, open_store(pg_dsn) as mid, open_store(other_pg_dsn) as dst:
        await fill(src)
        first = await copy_store(src, mid, chunk_size=7)
        assert (first.copied, first.resumed, first.timestamps_preserved) == (66, False, True)
        assert await snapshot(mid) == await snapshot(src)
        await copy_store(mid, dst)
        assert await snapshot(dst) == await snapshot(src)
        assert await dst.stream_version("gone-1") is None
        assert [e.version async for e in dst.read_stream("again-1")] == [1, 2]
        again = await copy_store(mid, dst)  # already complete: a resumed run copies nothing
        assert (again.copied, again.resumed) == (0, True)


async def test_copy_resumes_after_an_interruption(pg_dsn: str) -> None:
    async with open_store("memory://") as src, open_store(pg_dsn) as dst:
        await fill(src)

        def interrupt(copied: int) -> None:
            if copied >= 20:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await copy_store(src, dst, chunk_size=10, progress=interrupt)
        assert len([e async for e in dst.read_all()]) == 20
        rest = await copy_store(src, dst, chunk_size=10)
        assert (rest.copied, rest.resumed) == (46, True)
        assert await snapshot(dst) == await snapshot(src)


async def test_copy_refuses_an_unrelated_destination(pg_dsn: str) -> None:
    from epoch import ConfigurationError

    async with open_store("memory://") as src, open_store(pg_dsn) as dst:
        await fill(src)
        await dst.append("other-1", [NewEvent("X", b"")])
        with pytest.raises(ConfigurationError) as info:
            await copy_store(src, dst)
        assert (
            str(info.value)
            == "the destination store is not empty and is not a partial copy of the source: copy into an empty store"
        )


async def test_sqlite_to_postgres_to_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    src_url, back_url = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'back.db'}"
    async with open_store(src_url) as src:
        await fill(src)
    runner = CliRunner()  # in a thread: the command runs its own event loop
    there = await asyncio.to_thread(runner.invoke, app, ["copy", src_url, pg_dsn, "--json"])
    assert there.exit_code == 0, there.output
    assert json.loads(there.output)["copied"] == 66
    back = await asyncio.to_thread(runner.invoke, app, ["copy", pg_dsn, back_url, "--json"])
    assert back.exit_code == 0, back.output
    report = json.loads(back.output)
    async with open_store(src_url) as src, open_store(pg_dsn) as mid, open_store(back_url) as dst:
        assert await snapshot(mid) == await snapshot(src)  # ids, versions, order, bytes, timestamps
        assert report["timestamps_preserved"] is True
        assert await snapshot(dst) == await snapshot(src)


async def test_import_refuses_what_does_not_fit(sql_store_url: str) -> None:
    from datetime import UTC, datetime

    from epoch import DuplicateEventId, WrongExpectedVersion

    url = sql_store_url
    when = datetime(2020, 5, 17, 12, 30, 15, 123456, tzinfo=UTC)

    def recorded(stream: str, version: int, id: uuid.UUID | None = None) -> RecordedEvent:
        return RecordedEvent(stream, version, 0, id or uuid.uuid4(), "T", b"{}", b"", when)

    async with open_store(url) as store:
        importer: Any = store
        first = recorded("s-1", 0)
        positions = await importer.import_events([first, recorded("s-1", 1)])
        assert len(positions) == 2
        assert positions == sorted(positions)
        with pytest.raises(WrongExpectedVersion):
            await importer.import_events([recorded("s-2", 0), recorded("s-1", 3)])  # a gap: 2 is missing
        with pytest.raises(DuplicateEventId):
            await importer.import_events([recorded("s-3", 0), recorded("s-3", 1, first.id)])
        assert [e.stream async for e in store.read_all()] == ["s-1", "s-1"]  # nothing else was written
        assert [e.recorded_at async for e in store.read_stream("s-1")] == [when, when]


@pytest.mark.parametrize("size", [0, -5, True, 2.5, "10"])
async def test_a_chunk_size_that_is_not_an_int_of_at_least_1_is_refused(size: Any) -> None:
    from epoch import ConfigurationError

    async with open_store("memory://") as src, open_store("memory://") as dst:
        await src.append("s-1", [NewEvent("A", b"1")])
        with pytest.raises(ConfigurationError) as info:
            await copy_store(src, dst, chunk_size=size)
        assert str(info.value) == f"copy_store(chunk_size=...) must be an int >= 1, not {size!r}"
        assert await dst.head_position() == 0


@pytest.mark.parametrize("size", ["0", "-5"])
def test_the_cli_refuses_a_chunk_size_below_1_in_one_line(size: str, tmp_path: Path) -> None:
    dst = tmp_path / "dst.db"
    done = CliRunner().invoke(app, ["copy", "memory://", f"sqlite:///{dst}", "--chunk-size", size])
    assert (done.exit_code, done.stdout) == (2, "")
    assert done.stderr == f"error: invalid value for '--chunk-size': '{size}' is not >= 1\ntry 'epoch copy --help'\n"
    assert not dst.exists()
