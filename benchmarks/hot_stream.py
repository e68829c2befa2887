"""How many commands on one busy stream a ``CommandHandler`` loses to ``WrongExpectedVersion``.

Every command appends one event to the same stream, so every pair of concurrent commands conflicts.
``--processes`` OS processes each run ``--tasks`` concurrent tasks, and each task executes ``--commands``
commands in turn through one handler per process (its state cache included)::

    python -m benchmarks.hot_stream --store sqlite:///hot.db --processes 2 --tasks 10 --retries 3
    python -m benchmarks.hot_stream --store postgresql://... --processes 2 --tasks 10

Without ``--retries`` the handler's default budget is used. Prints one line: how many commands
succeeded and failed, the largest number of decisions one command took, and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from epoch import Codec, CommandHandler, Decider, WrongExpectedVersion, open_store


@dataclass(frozen=True, slots=True)
class Increment:
    pass


@dataclass(frozen=True, slots=True)
class Incremented:
    pass


counter = Decider(decide=lambda command, count: [Incremented()], evolve=lambda count, event: count + 1, initial_state=0)
codec = Codec([Incremented])


async def worker(url: str, stream_id: str, tasks: int, commands: int, retries: int | None) -> dict[str, Any]:
    async with open_store(url) as store:
        handler: CommandHandler[Increment, int, Incremented] = (
            CommandHandler(store, counter, "hot", codec)  # the default budget
            if retries is None
            else CommandHandler(store, counter, "hot", codec, retries=retries)
        )
        succeeded = failed = most = 0

        async def run_task() -> None:
            nonlocal succeeded, failed, most
            for _ in range(commands):
                try:
                    result = await handler.execute(stream_id, Increment())
                except WrongExpectedVersion:
                    failed += 1
                else:
                    succeeded += 1
                    most = max(most, result.attempts)

        await asyncio.gather(*(run_task() for _ in range(tasks)))
    return {"succeeded": succeeded, "failed": failed, "most": most}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--retries", type=int, default=None)
    parser.add_argument("--stream", default=None, help=argparse.SUPPRESS)  # set for the worker processes
    args = parser.parse_args()
    if args.stream is not None:
        print(json.dumps(asyncio.run(worker(args.store, args.stream, args.tasks, args.commands, args.retries))))
        return
    stream_id = uuid.uuid4().hex[:8]
    command = [sys.executable, "-m", "benchmarks.hot_stream", "--store", args.store, "--stream", stream_id]
    command += ["--tasks", str(args.tasks), "--commands", str(args.commands)]
    if args.retries is not None:
        command += ["--retries", str(args.retries)]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
    outcomes = [json.loads(p.communicate()[0]) for p in processes]
    elapsed = time.perf_counter() - started
    succeeded = sum(o["succeeded"] for o in outcomes)
    failed = sum(o["failed"] for o in outcomes)
    most = max(o["most"] for o in outcomes)
    total = succeeded + failed
    retries = "default" if args.retries is None else args.retries
    print(
        f"{args.processes} x {args.tasks} tasks x {args.commands} commands, retries={retries}: "
        f"{succeeded}/{total} succeeded, {failed} failed ({100 * failed / total:.1f}%), "
        f"at most {most} decisions, {elapsed:.1f}s"
    )


if __name__ == "__main__":
    main()
