"""The Users example end to end: what ``epoch demo`` runs (on the default SQLite store)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from epoch import EventStore, WrongExpectedVersion, open_store
from epoch.examples.users.domain import AddUser, DuplicateName, UpdateUser, UserServices
from epoch.examples.users.service import UserService

Echo = Callable[[str], None]


async def show_stream(store: EventStore, stream: str, echo: Echo) -> None:
    async for event in store.read_stream(stream):
        echo(f"  v{event.version:<3} pos {event.position:<6} {event.type:<12} {event.data.decode()}")


async def run_demo(url: str | None, echo: Echo = print) -> None:
    """Add, rename and race users in a fresh directory stream; show events, a conflict and time travel."""
    directory = uuid.uuid4().hex[:8]  # a fresh directory per run, so running twice works
    stream = f"users-{directory}"
    async with open_store(url) as store:
        service = UserService(store, directory)
        echo(f"Users directory stream {stream!r} on {url or 'the default store (sqlite:///epoch.db)'}")

        ada = await service.add_user(AddUser("ada"))
        grace = await service.add_user(AddUser("grace"))
        ada_id = ada.events[0].data.user_id
        await service.update_user(UpdateUser(ada_id, "ada lovelace"))
        echo("\n1. Commands: AddUser(ada), AddUser(grace), UpdateUser(ada -> 'ada lovelace')")
        try:
            await service.add_user(AddUser("grace"))
        except DuplicateName as exc:
            echo(f"   AddUser(grace) again is refused by decide: DuplicateName: {exc}")
        same = await service.update_user(UpdateUser(ada_id, "ada lovelace"))
        echo(f"   UpdateUser with the same name decides nothing: {len(same.events)} events, version {same.version}")

        echo(f"\n2. The events of {stream}:")
        await show_stream(store, stream, echo)

        echo("\n3. Concurrency: a stale explicit expected_version is refused, never retried ...")
        loaded = await service.handler.load(directory)
        await UserService(store, directory).add_user(AddUser("linus"))
        try:
            await service.handler.execute(directory, AddUser("barbara"), loaded.version, services=service.services)
        except WrongExpectedVersion as exc:
            echo(f"   WrongExpectedVersion: {exc}")
        echo("   ... while without one, racing writers re-load, re-decide and retry:")
        racers = [UserService(store, directory, UserServices(), retries=10) for _ in range(5)]
        names = ["alan", "edsger", "donald", "margaret", "ken"]
        results = await asyncio.gather(
            *(racer.add_user(AddUser(name)) for racer, name in zip(racers, names, strict=True))
        )
        for name, result in zip(names, results, strict=True):
            echo(f"   AddUser({name:<9}) -> version {result.version}, decided {result.attempts}x")
        retried = sum(r.attempts - 1 for r in results)
        echo(f"   {retried} retries after conflicts; every user was added exactly once.")

        echo("\n4. Time travel: the directory at version 1 (after grace was added):")
        then = await service.handler.state_at(directory, version=grace.version)
        for user in then.users.values():
            echo(f"   {user.user_id}  {user.name}")
        now = await service.users()
        echo(f"   ... and now it has {len(now)} users: {', '.join(sorted(u.name for u in now.values()))}")

        echo("\nNext (in a checkout, epoch is .venv/bin/epoch):")
        store_flag = f" --store {url}" if url else ""
        for command, why in (
            (f"epoch streams{store_flag}", "every stream in the store"),
            (f"epoch read {stream}{store_flag}", "this directory's events"),
            (f"epoch tail --follow{store_flag}", "the global log, live"),
            (f"epoch serve{store_flag}", "the web explorer"),
            ("make test", "the whole suite"),
        ):
            echo(f"  {command:<40} # {why}")
