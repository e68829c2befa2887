"""An OS process that watches a profile until its personal data reads as forgotten:
``python -m tests.personal_worker URL``. Prints ``ready`` once it has read the email, then
``forgotten <time.time()>`` when a load first shows it redacted (another process ran the forget)."""

from __future__ import annotations

import asyncio
import sys
import time

from epoch import CommandHandler, KeyStore, open_store
from epoch.testing._personal_domain import personal_codec, profiles


async def watch(url: str) -> None:
    async with open_store(url) as store:
        handler = CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
        state = (await handler.load("u1")).state
        assert state.email == "ada@example.com", state
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (await handler.load("u1")).state.email is None:
                print(f"forgotten {time.time()}", flush=True)
                return
            await asyncio.sleep(0.005)
        print("never forgotten", flush=True)


if __name__ == "__main__":
    asyncio.run(watch(sys.argv[1]))
