"""``epoch demo --json``: what the demo wrote, read back from the store, as one JSON document.

Kept apart from ``epoch.cli.demo`` so that the demo itself (its import path, its text) changes freely: the
summary only needs ``run_demo(url, echo)`` and the store.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from epoch import open_store
from epoch.cli._stores import resolve, shown
from epoch.cli.browse import event_to_json
from epoch.errors import ConfigurationError

RunDemo = Callable[[str | None, Callable[[str], None]], Awaitable[None]]


async def demo_summary(run_demo: RunDemo, url: str | None) -> dict[str, Any]:
    """Run the demo with its text captured, then describe the events it appended (those after the head
    position it started from): ``store``, ``streams`` (each with its final ``version`` and event counts by
    type), ``events`` (as ``epoch read --json`` shows them) and ``output`` (the demo's text, line by line)."""
    resolved = resolve(url)
    if resolved.partition("://")[0].lower() == "memory":
        # Each opening of memory:// is a new empty store: the demo's events are gone once it returns.
        raise ConfigurationError(
            "epoch demo --json reads back what the demo wrote: use a store that outlives it "
            "(sqlite:///demo.db, postgresql://...), not memory://"
        )
    async with open_store(resolved) as store:
        start = await store.head_position()
    output: list[str] = []
    await run_demo(url, lambda text: output.extend(text.split("\n")))
    async with open_store(resolved) as store:
        events = [e async for e in store.read_all(start)]
        streams: dict[str, dict[str, Any]] = {}
        for event in events:
            row = streams.setdefault(event.stream, {"stream": event.stream, "events": 0, "types": {}})
            row["events"] += 1
            row["types"][event.type] = row["types"].get(event.type, 0) + 1
        for row in streams.values():
            row["version"] = await store.stream_version(row["stream"])
    return {
        "store": shown(resolved),
        "streams": list(streams.values()),
        "events": [json.loads(event_to_json(e)) for e in events],
        "output": output,
    }
