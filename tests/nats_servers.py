"""NATS JetStream for the forwarding tests: the shared server of ``scripts/test`` and servers of our own.

``EPOCH_TEST_NATS_URL`` names the shared server (started by ``scripts/services.sh``); with
``EPOCH_REQUIRE_NATS=1`` (``make test``, CI) a missing server fails the run instead of skipping. A test
that restarts the broker starts a :class:`NatsServer` of its own from the same binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest


def no_nats(reason: str) -> None:
    if os.environ.get("EPOCH_REQUIRE_NATS") == "1":
        pytest.fail(f"NATS is required here but unavailable: {reason}")
    pytest.skip(reason)


def nats_binary() -> str:
    binary = os.environ.get("EPOCH_NATS_SERVER") or shutil.which("nats-server")
    if binary is None:
        no_nats("no nats-server binary (apt-get install nats-server)")
    assert binary is not None
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A nats-server with JetStream on loopback, its storage in ``root`` (kept across restarts)."""

    def __init__(self, root: Path) -> None:
        self.binary = nats_binary()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.monitor = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        argv += ["-sd", str(self.root / "js"), "-l", str(self.root / "nats.log")]
        self.process = subprocess.Popen(argv)
        deadline = time.monotonic() + 10
        while True:
            try:
                url = f"http://127.0.0.1:{self.monitor}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def shared_url() -> str:
    url = os.environ.get("EPOCH_TEST_NATS_URL")
    if not url:
        no_nats("EPOCH_TEST_NATS_URL is not set (scripts/test starts a nats-server)")
    assert url is not None
    return url


def fresh_prefix() -> str:
    """A subject prefix (and JetStream stream name) no other test uses on a shared server."""
    return f"t{uuid.uuid4().hex[:12]}"
