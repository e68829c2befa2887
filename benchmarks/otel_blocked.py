"""epoch where ``opentelemetry`` cannot be imported at all, as in an install without the ``otel`` extra.

The bench process has the API (the dev group) and, with ``epoch-otel`` in the run, the SDK imported, so
this side runs each workload in a subprocess of its own whose ``sys.meta_path`` refuses every
``opentelemetry`` module before epoch is imported; the subprocess runs the workload once untimed (on a
location of its own), then measures it as every side does. Next to ``epoch`` (the API installed, no SDK set) and ``epoch-otel`` (an SDK recording),
``round_ratios["epoch-no-otel"]`` of the epoch result shows what the API alone costs: nothing, within
noise (docs/observability.md). ``python -m benchmarks.otel_blocked '<json spec>'`` is the subprocess.
"""

from __future__ import annotations

import importlib.abc
import inspect
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.backends import Backend

ROOT = Path(__file__).resolve().parent.parent


class EpochNoOtelSide:
    """:class:`EpochSide`'s workloads, each in a subprocess where ``opentelemetry`` is not importable."""

    impl = "epoch-no-otel"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __getattr__(self, name: str) -> Any:
        from benchmarks.epoch_side import EpochSide

        method = getattr(EpochSide, name)  # AttributeError for what EpochSide lacks: that workload sits out
        # fill/read_all_discard hand a live store back (the RSS workload, which runs its own subprocesses)
        if not inspect.iscoroutinefunction(method) or name in ("fill", "read_all_discard"):
            raise AttributeError(name)

        async def in_subprocess(*args: Any) -> Any:
            spec = {"method": name, "args": list(args), "backend": self.backend.name}
            spec |= {"synchronous": self.backend.synchronous, "admin_dsn": self.backend.admin_dsn}
            optimize = ["-O"] if sys.flags.optimize else []
            done = subprocess.run(
                [sys.executable, *optimize, "-m", "benchmarks.otel_blocked", json.dumps(spec)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"epoch-no-otel {name} failed:\n{done.stderr}")
            value = json.loads(done.stdout.strip().splitlines()[-1])
            return tuple(value) if isinstance(value, list) else value

        return in_subprocess


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses ``opentelemetry`` and its submodules, as if the package were not installed."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if fullname == "opentelemetry" or fullname.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def _main(spec: dict[str, Any]) -> Any:
    import asyncio

    from benchmarks.epoch_side import EpochSide
    from epoch import telemetry

    backend = Backend(spec["backend"], synchronous=spec["synchronous"], admin_dsn=spec["admin_dsn"])
    method = getattr(EpochSide(backend), spec["method"])
    location, *rest = spec["args"]
    try:
        # Once untimed on a location of its own first: the in-process sides run warm (earlier rounds and
        # workloads ran the same code), and a cold process would measure its first calls, not epoch.
        warm = backend.fresh("warm")
        try:
            asyncio.run(method(warm, *rest))
        finally:
            backend.drop(warm)
        result = asyncio.run(method(location, *rest))
    finally:
        backend.close()  # what it created itself only: the measured location is the parent's to drop
    # The claim this side stands for: nothing of OpenTelemetry was loaded (checked also under -O).
    loaded = [name for name in sys.modules if name.startswith("opentelemetry")]
    if loaded or telemetry.current() is not None:
        raise SystemExit(f"epoch-no-otel: opentelemetry was imported: {loaded}")
    return result


if __name__ == "__main__":
    sys.meta_path.insert(0, Blocker())  # before epoch is imported
    print(json.dumps(_main(json.loads(sys.argv[1]))))
