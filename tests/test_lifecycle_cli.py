"""``epoch scavenge``: the CLI face of ``EventStore.scavenge`` (DESIGN §8)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner, Result

from epoch import open_store
from epoch.cli import app
from epoch.testing import collect, new_events


async def limited_store(url: str) -> None:
    async with open_store(url) as store:
        await store.append("l-1", new_events(5))
        await store.append("l-2", new_events(3))
        await store.set_stream_limits("l-1", max_count=2)
        await store.set_stream_limits("l-2", max_count=1)


def epoch(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


async def test_scavenge_erases_what_limits_exclude(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'epoch.db'}"
    await limited_store(url)
    one = await asyncio.to_thread(epoch, "scavenge", "--stream", "l-1", "--store", url)  # its own event loop
    assert (one.exit_code, one.output) == (0, "erased 3 events of l-1\n")
    rest = await asyncio.to_thread(epoch, "scavenge", "--store", url, "--json")
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.output) == {"store": url, "stream": None, "erased": 2}
    again = await asyncio.to_thread(epoch, "scavenge", "--store", url)
    assert (again.exit_code, again.output) == (0, "erased 0 events\n")
    async with open_store(url) as store:
        left = [(e.stream, e.version) for e in await collect(store.read_all())]
    assert left == [("l-1", 3), ("l-1", 4), ("l-2", 2)]


async def test_scavenge_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    done = await asyncio.to_thread(epoch, "scavenge", "--store", f"sqlite:///{missing}")
    assert (done.exit_code, done.output) == (1, f"error: no such store: sqlite:///{missing}\n")
    assert not missing.exists()


async def test_scavenge_refuses_a_bad_stream_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'epoch.db'}"
    await limited_store(url)
    done = await asyncio.to_thread(epoch, "scavenge", "--stream", " l-1", "--store", url)
    assert done.exit_code == 1
    assert done.output == "error: invalid stream name ' l-1': has leading or trailing whitespace\n"
