"""Exactly-once read models: the read model and the checkpoint commit together (SQLite, PostgreSQL).

The kill test SIGKILLs a runner OS process at random points while it projects, restarts it, and checks
that the read model equals a fresh rebuild (``renames`` counts UPDATEs, so a batch applied twice shows).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from epoch.errors import StoreError
from epoch.examples.users import AddUser, UpdateUser, UserService, codec
from epoch.examples.users.projections import UserDirectory
from epoch.projections import ProjectionRunner, Retry, Transaction
from epoch.records import EventEnvelope
from epoch.stores import EventStore, open_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def store(sql_store_url: str) -> AsyncIterator[EventStore]:
    async with open_store(sql_store_url) as opened:
        yield opened


async def rows(runner: ProjectionRunner) -> list[tuple[Any, ...]]:
    assert runner.database is not None
    async with runner.database.transaction() as tx:
        return [tuple(r) for r in await UserDirectory.rows(tx)]


async def write_users(store: EventStore, count: int, renames: int, seed: int = 0, prefix: str = "user") -> None:
    rng = random.Random(seed)
    services = [UserService(store, d) for d in ("eu", "us", "apac")]
    ids: list[tuple[UserService, str]] = []
    for i in range(count):
        service = rng.choice(services)
        result = await service.add_user(AddUser(f"{prefix}{i}"))
        ids.append((service, result.events[0].data.user_id))
    for j in range(renames):
        service, user_id = rng.choice(ids)
        await service.update_user(UpdateUser(user_id, f"renamed{j}"))


async def test_read_model_commits_with_its_checkpoint(store: EventStore) -> None:
    await write_users(store, 20, 30)
    runner = ProjectionRunner(store, codec, [UserDirectory()], batch_size=7)
    await runner.run_until_idle()
    built = await rows(runner)
    assert len(built) == 20 and sum(r[3] for r in built) == 30
    assert await runner.checkpoints.load("user-directory") == await store.head_position()

    await runner.rebuild("user-directory")
    assert await rows(runner) == built


async def test_failed_batch_rolls_back_read_model_and_checkpoint(store: EventStore) -> None:
    await write_users(store, 5, 0)

    class FailsOnThird(UserDirectory):
        name = "fails"
        policy = "park"
        calls = 0

        async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
            await super().handle_in_transaction(envelope, tx)
            if envelope.data.name == "user2":
                raise RuntimeError("after writing")  # the write above must not survive

    runner = ProjectionRunner(store, codec, [FailsOnThird()], retry=Retry(1, 0.001))
    await runner.run_until_idle()
    names = sorted(r[2] for r in await rows(runner))
    assert names == ["user0", "user1", "user3", "user4"]
    [parked] = await runner.parking.list("fails")
    assert parked.event.type == "UserAdded"
    assert await runner.checkpoints.load("fails") == await store.head_position()


async def test_live_then_status(store: EventStore) -> None:
    await write_users(store, 1, 0)
    runner = ProjectionRunner(store, codec, [UserDirectory()])
    await runner.run_until_idle()  # catch up (and create the table) ...
    async with runner:
        runner.start()  # ... then follow live events
        await write_users(store, 2, 2, seed=5, prefix="live")
        for _ in range(250):
            if len(await rows(runner)) == 3 and sum(r[3] for r in await rows(runner)) == 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("live events were not projected")
    [status] = await runner.status()
    assert status.lag_events == 0 and status.checkpoint == status.head and not status.failing


_RUNNER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from epoch.stores import open_store
    from epoch.projections import ProjectionRunner
    from epoch.examples.users import codec
    from epoch.examples.users.projections import UserDirectory

    class SlowDirectory(UserDirectory):
        # Slow enough that kills land inside transactions, between them and between statements.
        async def handle_in_transaction(self, envelope, tx):
            await super().handle_in_transaction(envelope, tx)
            await asyncio.sleep(0.004)

    async def main() -> None:
        async with open_store(sys.argv[1]) as store:
            runner = ProjectionRunner(store, codec, [SlowDirectory()], batch_size=int(sys.argv[2]))
            print("ready", flush=True)
            await runner.run()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_kill_runner_process_at_random_points(store: EventStore, sql_store_url: str) -> None:
    rng = random.Random(4)
    await write_users(store, 60, 240, seed=1)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    kills = 0
    checkpoints = ProjectionRunner(store, codec, [UserDirectory()]).checkpoints
    progress: list[int] = []
    writer = asyncio.create_task(write_users(store, 20, 80, seed=2))  # live events arrive meanwhile
    for _ in range(8):
        process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER_SCRIPT, sql_store_url, str(rng.choice([1, 3, 16]))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert await asyncio.to_thread(process.stdout.readline) == b"ready\n"
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        assert process.wait() in (-signal.SIGKILL, 0)
        process.stdout.close()
        progress.append(await checkpoints.load("user-directory"))
    await writer
    assert kills >= 4
    assert len(set(progress)) >= 3, f"the runner barely moved between kills: {progress}"

    runner = ProjectionRunner(store, codec, [UserDirectory()])
    await runner.run_until_idle()
    survived = await rows(runner)
    await runner.rebuild("user-directory")
    rebuilt = await rows(runner)
    assert survived == rebuilt
    assert len(rebuilt) == 80 and sum(r[3] for r in rebuilt) == 320


class NamesSeen:
    """At least once (``handle``), beside the exactly-once ``UserDirectory``."""

    name = "names-seen"

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen.append(envelope.position)


# A checkpoint edited by hand (or corrupt) to a value no save writes. SQLite keeps what it is given
# (INTEGER affinity keeps text, blobs and reals, and numbers past 64 bits as reals); PostgreSQL's
# NUMERIC(40, 0) refuses text and blobs and rounds 1.5, but takes NaN.
TAMPERED = {
    "sqlite": {
        "'abc'": "'abc'",
        "X'00'": "b'\\x00'",
        "1.5": "1.5",
        "9223372036854775808": "9.223372036854776e+18",
        "-5": "-5",
    },
    "postgresql": {"'NaN'": "Decimal('NaN')", "-5": "Decimal('-5')"},
}


@pytest.mark.parametrize("kind", ["exactly-once", "at-least-once"])
@pytest.mark.parametrize("value", ["'abc'", "X'00'", "1.5", "9223372036854775808", "-5", "'NaN'"])
async def test_a_tampered_checkpoint_is_an_error_naming_it(store: EventStore, kind: str, value: str) -> None:
    projection: Any = UserDirectory() if kind == "exactly-once" else NamesSeen()
    runner = ProjectionRunner(store, codec, [projection], retry=Retry(retries=0))
    assert runner.database is not None
    shown = TAMPERED[runner.database.dialect].get(value)
    if shown is None:
        pytest.skip(f"{runner.database.dialect} cannot store {value} in epoch_checkpoints.position")
    await UserService(store, "eu").add_user(AddUser("ada"))
    await runner.run_until_idle()
    async with runner.database.transaction() as tx:
        await tx.execute(f"UPDATE epoch_checkpoints SET position = {value} WHERE name = ?", [projection.name])
    message = (
        f"projection {projection.name!r}: its checkpoint in epoch_checkpoints is {shown}, not a position "
        "(an integer >= 0): correct or delete the row (without one it starts again from the beginning)"
    )
    fresh = ProjectionRunner(store, codec, [projection], retry=Retry(retries=0))
    for attempt in (
        fresh.run_until_idle,
        fresh.status,
        fresh.checkpoints.list,
        lambda: fresh.checkpoints.load(projection.name),
    ):
        with pytest.raises(StoreError) as raised:
            await asyncio.wait_for(attempt(), 10)  # at once: never a reload loop
        assert str(raised.value) == message
    live = asyncio.ensure_future(fresh.run())
    with pytest.raises(StoreError) as raised:
        await asyncio.wait_for(live, 10)  # a live run stops on it too: it is no outage to wait out
    assert str(raised.value) == message


async def test_a_failure_quoting_a_lone_surrogate_is_stored_escaped(store: EventStore) -> None:
    runner = ProjectionRunner(store, codec, [NamesSeen()])
    await runner.checkpoints.mark_failing("names-seen", "RuntimeError: bad name 'a\ud800'")
    [row] = await runner.checkpoints.list()
    assert (row.name, row.position, row.error) == ("names-seen", 0, "RuntimeError: bad name 'a\\ud800'")
    [status] = await runner.status()
    assert status.error == "RuntimeError: bad name 'a\\ud800'"
