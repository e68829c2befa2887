"""One process of the ``hot_stream`` workload's multi-process variant: N tasks on one stream.

The parent starts every process, waits until each has opened its store, then releases them together
(a "go" file) so the processes really contend; each prints how long it ran, when it finished and how
many of its commands failed. ``python -m benchmarks.hot_worker '<json spec>'``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.epoch_side import hot_commands
from epoch import open_store

ROOT = Path(__file__).resolve().parent.parent


async def _work(spec: dict[str, Any]) -> dict[str, Any]:
    async with open_store(spec["url"]) as store:
        await store.head_position()  # opened and connected before the start
        Path(spec["ready"]).touch()
        go = Path(spec["go"])
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("hot_worker: never released")
            await asyncio.sleep(0.001)
        seconds, failures = await hot_commands(store, spec["tasks"], spec["commands"])
    return {"seconds": seconds, "finished": time.time(), "failures": failures}


def run_processes(url: str, processes: int, tasks: int, commands: int) -> tuple[float, int]:
    """Wall-clock seconds from the release to the last process's end, and the failures of all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        share = [commands // processes + (1 if p < commands % processes else 0) for p in range(processes)]
        children = []
        for p in range(processes):
            spec = {
                "url": url,
                "tasks": tasks,
                "commands": share[p],
                "ready": os.path.join(tmp, f"ready-{p}"),
                "go": go,
            }
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.hot_worker", json.dumps(spec)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(tmp, f"ready-{p}")) for p in range(processes)):
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                for child in children:
                    child.kill()
                raise RuntimeError("a hot_stream worker did not start")
            time.sleep(0.005)
        released = time.time()
        Path(go).touch()
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=600)
            if child.returncode != 0:
                raise RuntimeError(f"a hot_stream worker failed with exit code {child.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    return max(r["finished"] for r in reports) - released, sum(r["failures"] for r in reports)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_work(json.loads(sys.argv[1])))))
