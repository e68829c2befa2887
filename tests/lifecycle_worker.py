"""An OS process that changes a stream's lifecycle: ``python -m tests.lifecycle_worker URL OP STREAM [N]``.

``OP`` is ``truncate`` (before version ``N``), ``tombstone``, or ``limit`` (``max_count=N``, then a
scavenge); it prints what the store answered (for a scavenge, the number of events erased).
"""

from __future__ import annotations

import asyncio
import sys

from epoch import open_store


async def change(url: str, op: str, stream: str, number: int) -> object:
    async with open_store(url) as store:
        if op == "truncate":
            await store.truncate_before(stream, number)
            return None
        if op == "tombstone":
            await store.delete_stream(stream, hard=True)
            return None
        await store.set_stream_limits(stream, max_count=number)
        return await store.scavenge(stream)


if __name__ == "__main__":
    url, op, stream = sys.argv[1:4]
    print(asyncio.run(change(url, op, stream, int(sys.argv[4]) if len(sys.argv) > 4 else 0)))
