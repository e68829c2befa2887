"""The Users example end to end: what ``epoch demo`` runs (on the default SQLite store).

Every step says in one sentence what it demonstrates and then shows every event it wrote, so each
version the output mentions can be found in it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from epoch import EventStore, WrongExpectedVersion, open_store
from epoch.examples.users.domain import AddUser, DuplicateName, UpdateUser, UserServices
from epoch.examples.users.service import UserService

Echo = Callable[[str], None]


class Shown:
    """Prints the events of one stream that are not printed yet, in version order."""

    def __init__(self, store: EventStore, stream: str, echo: Echo) -> None:
        self.store, self.stream, self.echo = store, stream, echo
        self.next_version = 0

    async def new_events(self) -> None:
        async for event in self.store.read_stream(self.stream, from_version=self.next_version):
            self.echo(f"  v{event.version:<3} pos {event.position:<6} {event.type:<12} {event.data.decode()}")
            self.next_version = event.version + 1


async def run_demo(url: str | None, echo: Echo = print) -> None:
    """Add, rename and race users in a fresh directory stream; show every event, a conflict and time travel."""
    directory = uuid.uuid4().hex[:8]  # a fresh directory per run, so running twice works
    stream = f"users-{directory}"
    async with open_store(url) as store:
        service = UserService(store, directory)
        shown = Shown(store, stream, echo)
        echo(f"Users directory stream {stream!r} on {url or 'the default store (sqlite:///epoch.db)'}")
        echo("Each step says what it shows, then lists the events it wrote (v: version in the stream,")
        echo("pos: position in the store's log).")

        echo("\n1. Commands become events: decide turns each command into events, appended to the stream.")
        echo("   AddUser(ada), AddUser(grace), UpdateUser(ada -> 'ada lovelace'):")
        ada = await service.add_user(AddUser("ada"))
        grace = await service.add_user(AddUser("grace"))
        ada_id = ada.events[0].data.user_id
        await service.update_user(UpdateUser(ada_id, "ada lovelace"))
        await shown.new_events()

        echo("\n2. decide may refuse a command or decide nothing; either way nothing is written.")
        try:
            await service.add_user(AddUser("grace"))
        except DuplicateName as exc:
            echo(f"   AddUser(grace) again is refused by decide: DuplicateName: {exc}")
        same = await service.update_user(UpdateUser(ada_id, "ada lovelace"))
        echo(f"   UpdateUser with the same name decides nothing: {len(same.events)} events, version {same.version}")

        echo("\n3. An explicit expected_version (e.g. from an HTTP If-Match) is checked once, never retried.")
        loaded = await service.handler.load(directory)
        echo(f"   We load the directory at version {loaded.version}; meanwhile another writer adds linus:")
        await UserService(store, directory).add_user(AddUser("linus"))
        await shown.new_events()
        try:
            await service.handler.execute(directory, AddUser("barbara"), loaded.version, services=service.services)
        except WrongExpectedVersion as exc:
            echo(f"   AddUser(barbara) expecting version {loaded.version} is refused, nothing written:")
            echo(f"   WrongExpectedVersion: {exc}")

        echo("\n4. Without expected_version, racing writers re-load, re-decide and retry: 5 add a user at once.")
        racers = [UserService(store, directory, UserServices()) for _ in range(5)]  # default retry budget
        names = ["alan", "edsger", "donald", "margaret", "ken"]
        results = await asyncio.gather(
            *(racer.add_user(AddUser(name)) for racer, name in zip(racers, names, strict=True))
        )
        for name, result in zip(names, results, strict=True):
            echo(f"   AddUser({name:<9}) -> version {result.version}, decided {result.attempts}x")
        retried = sum(r.attempts - 1 for r in results)
        echo(f"   {retried} retries after conflicts; every user was added exactly once:")
        await shown.new_events()

        echo(f"\n5. Time travel: state_at folds the events up to a version; at {grace.version}, after grace was added:")
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
