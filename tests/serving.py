"""``epoch serve`` in a test's background: wait until it answers, stop it, and show its stderr on failure."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

__all__ = ["free_port", "serving"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(process: subprocess.Popen[str], port: int, ready: Callable[[str], bool]) -> Iterator[str]:
    """The base URL of ``process`` once ``ready(base)`` holds (30 s at most); on exit it is terminated and
    must not have printed a traceback."""
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not ready(base):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate(timeout=5)
                pytest.fail(f"epoch serve did not start: {err}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert "Traceback" not in err, err
