"""A store's key table, delegated, that holds one chosen call until the test releases it: a slow database,
held exactly where a forget is to land (``read_keys`` with its rows in hand, ``write_keys`` once written)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from epoch.stores import SubjectKey, SupportsKeys, keys_of

__all__ = ["HeldKeys"]


class HeldKeys(SupportsKeys):
    def __init__(self, store: object) -> None:
        table = keys_of(store)
        assert table is not None
        self.table = table
        self._holds: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}
        self.reads: list[list[str]] = []  # the subjects of every read_keys, in order

    def hold(self, call: str) -> tuple[asyncio.Event, asyncio.Event]:
        """Hold the next ``call`` ("read_keys" or "write_keys"): ``(inside, release)``, set once it waits,
        and to be set by the test to let it return."""
        held = self._holds[call] = (asyncio.Event(), asyncio.Event())
        return held

    async def _wait(self, call: str) -> None:
        held = self._holds.pop(call, None)
        if held is not None:
            held[0].set()
            await held[1].wait()

    async def read_keys(self, subjects: Sequence[str]) -> list[SubjectKey]:
        self.reads.append(list(subjects))
        rows = await self.table.read_keys(subjects)
        await self._wait("read_keys")  # the rows are on their way back
        return rows

    async def write_keys(self, keys: Sequence[SubjectKey]) -> None:
        await self.table.write_keys(keys)
        await self._wait("write_keys")  # written, the append still to come

    async def forget_keys(self, subject: str) -> int:
        return await self.table.forget_keys(subject)

    async def key_changes(self) -> int:
        return await self.table.key_changes()

    def export_keys(self) -> AsyncIterator[SubjectKey]:
        return self.table.export_keys()
