"""An OS process that forwards a store to NATS: ``python -m tests.forward_worker STORE_URL NATS_URL PREFIX ACKS``.

It appends one line per acknowledged publish to the file ACKS (``id duplicate-flag``), flushed at once,
so a test that SIGKILLs it knows how far it got; it exits when it has forwarded up to the head.
"""

from __future__ import annotations

import asyncio
import sys

from epoch import open_store
from epoch.forwarding import Forwarder, Message
from epoch.forwarding.nats import JetStreamSink


class LoggedSink(JetStreamSink):
    def __init__(self, url: str, prefix: str, acks: str) -> None:
        super().__init__(url, subject=prefix + ".{category}.{type}")
        self.acks = open(acks, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    async def publish(self, message: Message) -> None:
        before = self.duplicates
        await super().publish(message)
        self.acks.write(f"{message.id} {int(self.duplicates > before)}\n")


async def forward(store_url: str, nats_url: str, prefix: str, acks: str) -> None:
    async with open_store(store_url) as store, LoggedSink(nats_url, prefix, acks) as sink:
        await Forwarder(store, sink, name=prefix, batch_size=500).run_until_idle()


if __name__ == "__main__":
    asyncio.run(forward(*sys.argv[1:5]))
