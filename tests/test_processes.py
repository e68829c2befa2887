"""Several OS processes run CommandHandler.execute on shared streams of one store: no lost update,
no double-applied command id, dense versions, strictly increasing positions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from epoch import open_store
from tests.test_commands import Open, handler_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
async def test_processes_lose_no_update(sql_store_url: str) -> None:
    url = sql_store_url
    streams = 8 if url.startswith("sqlite:") else 50  # SQLite has one writer: fewer streams, as many races
    async with open_store(url) as store:
        setup = handler_for(store)
        for stream in range(streams):
            await setup.execute(stream, Open("ada"))
    commands = 60
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workers", url, str(worker), str(commands), str(streams)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(4)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=240) for w in workers))
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert int(out.strip()) == commands
    async with open_store(url) as store:
        reader = handler_for(store, cache=None)
        balances = [(await reader.load(stream)).state.balance for stream in range(streams)]
        assert sum(balances) == 4 * commands
        for stream in range(streams):
            versions = [e.version async for e in store.read_stream(f"account-{stream}")]
            assert versions == list(range(len(versions)))
        positions = [e.position async for e in store.read_all()]
        assert positions == sorted(set(positions))
        assert len(positions) == streams + 4 * commands
