"""LISTEN/NOTIFY for subscriptions: one listening connection per store, shared by its subscriptions, and
registered in ``epoch_listeners`` while it listens (appends notify only then, migrations/v7.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
import psycopg.errors

from epoch._backoff import Backoff
from epoch.stores.postgres.sql import (
    LISTEN,
    LISTENER_LOCK_TIMEOUT,
    REGISTER_LISTENER,
    REGISTER_LISTENER_NOWAIT,
    UNREGISTER_LISTENER,
)
from epoch.stores.postgres.url import network_options

__all__ = ["Listener", "Waiter"]

log = logging.getLogger("epoch.stores.postgres")


class Waiter:
    """One subscription's wake-up flag, set by NOTIFY for its categories (or every category)."""

    __slots__ = ("categories", "event", "poll_interval")

    def __init__(self, categories: tuple[str, ...] | None, poll_interval: float) -> None:
        self.categories = None if categories is None else frozenset(categories)
        self.event = asyncio.Event()
        self.poll_interval = poll_interval

    def clear(self) -> None:
        self.event.clear()

    async def wait(self) -> None:
        """Until woken, or ``poll_interval`` seconds (the safety poll)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), self.poll_interval)


async def _register(conn: psycopg.AsyncConnection[Any]) -> None:
    """Register the session in ``epoch_listeners``: tries that hold no append back, then one that waits."""
    for _ in range(_NOWAIT_TRIES):
        try:
            await conn.execute(REGISTER_LISTENER_NOWAIT)
            return
        except psycopg.errors.LockNotAvailable:  # an append is committing: it ends within its fsync
            await asyncio.sleep(0.002)
    await conn.execute(REGISTER_LISTENER)


_NOWAIT_TRIES = 50


class Listener:
    """One ``LISTEN epoch_events`` connection per store, shared by its subscriptions; reconnects with backoff."""

    def __init__(self, conninfo: str, poll_interval: float) -> None:
        self.conninfo = conninfo
        self.poll_interval = poll_interval
        self.waiters: set[Waiter] = set()
        self.task: asyncio.Task[None] | None = None

    def register(self, categories: tuple[str, ...] | None) -> Waiter:
        waiter = Waiter(categories, self.poll_interval)
        self.waiters.add(waiter)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="epoch-postgres-listen")
        return waiter

    async def unregister(self, waiter: Waiter) -> None:
        self.waiters.discard(waiter)
        if not self.waiters:
            await self.stop()

    async def stop(self) -> None:
        task, self.task = self.task, None
        for waiter in self.waiters:
            waiter.event.set()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _wake(self, category: str) -> None:
        for waiter in self.waiters:
            if waiter.categories is None or not category or category in waiter.categories:
                waiter.event.set()

    async def _run(self) -> None:
        wait = Backoff(first=0.05, cap=2.0)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, **network_options(self.conninfo)
                )
                async with conn:
                    # LISTEN, then register: appends notify only while a listener is registered, and
                    # registering waits for those that found none (migrations/v7.py).
                    await conn.execute(LISTEN)
                    await conn.execute(LISTENER_LOCK_TIMEOUT)
                    try:
                        await _register(conn)
                        wait.reset()
                        self._wake("")  # events may have committed while we were not listening
                        while True:
                            async for notify in conn.notifies(timeout=30.0):
                                self._wake(notify.payload)
                            await conn.execute("SELECT 1")  # quiet for a while: is the connection alive?
                    finally:
                        # Writers stop notifying once no listener is left (a row left behind only costs
                        # them their notify, until the next registration removes it).
                        with contextlib.suppress(Exception):
                            async with asyncio.timeout(1.0):
                                await conn.execute(UNREGISTER_LISTENER)
            except psycopg.Error as exc:
                pause = wait.next()
                log.warning("LISTEN connection lost (%s); reconnecting in %.2fs", exc, pause)
                self._wake("")
                await asyncio.sleep(pause)
