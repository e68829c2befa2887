"""``python -m benchmarks.rss SPEC``: one side's peak RSS growth while reading the whole log, decoded.

Run in a process of its own so nothing else the suite did counts: fill the store, collect garbage,
reset the kernel's peak-RSS mark (``/proc/self/clear_refs``), read everything, and print the growth
of the peak over the resident set before the read, as JSON.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys

from benchmarks.backends import Backend
from benchmarks.harness import current_rss_kb, peak_rss_kb, reset_peak_rss
from benchmarks.suite import make_sides


async def measure(spec: dict[str, object]) -> dict[str, object]:
    backend = Backend(str(spec["store"]), synchronous=str(spec["synchronous"]))
    try:
        (side,) = make_sides(backend, (str(spec["impl"]),))
        handle = await side.fill(str(spec["location"]), int(spec["events"]))  # type: ignore[call-overload]
        gc.collect()
        reset = reset_peak_rss()
        before = current_rss_kb() if reset else peak_rss_kb()
        count = await side.read_all_discard(handle)
        after = peak_rss_kb()
    finally:
        backend.close()  # only this process's empty scratch directory: the location is the parent's
    return {"growth_kb": after - before, "before_kb": before, "peak_kb": after, "count": count, "reset": reset}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(json.loads(sys.argv[1])))))
