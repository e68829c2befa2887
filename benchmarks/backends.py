"""Where each measurement runs: a fresh store per side and round, so no round inherits another's data.

memory: nothing to create. sqlite: a new file in a temporary directory (WAL, the same ``synchronous``
level on every side). postgres: a new database on the one server (``EPOCH_TEST_PG_DSN``), dropped at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

_counter = itertools.count(1)


@dataclass
class Backend:
    """A store kind and how to get a fresh, empty place for it."""

    name: str  # memory | sqlite | postgres
    synchronous: str = "FULL"  # SQLite, every side
    admin_dsn: str | None = None  # PostgreSQL server
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="epoch-bench-"))
    _databases: list[str] = field(default_factory=list)

    def fresh(self, label: str) -> str:
        """A new empty location: '' (memory), a file path (sqlite) or a DSN (postgres)."""
        n = next(_counter)
        if self.name == "memory":
            return ""
        if self.name == "sqlite":
            return os.path.join(self.root, f"{label}-{n}.db")
        assert self.admin_dsn is not None
        import psycopg

        name = f"bench_{label}_{os.getpid()}_{n}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        return with_database(self.admin_dsn, name)

    def drop(self, location: str) -> None:
        """Free a location once its measurement is done."""
        if self.name == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(location + suffix)
        elif self.name == "postgres" and location:
            import psycopg

            name = urlsplit(location).path.lstrip("/")
            assert self.admin_dsn is not None
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if name in self._databases:
                self._databases.remove(name)

    def close(self) -> None:
        for name in list(self._databases):
            assert self.admin_dsn is not None
            self.drop(with_database(self.admin_dsn, name))
        shutil.rmtree(self.root, ignore_errors=True)

    def settings(self) -> dict[str, str]:
        """The durability settings every side runs with (stated in the report)."""
        if self.name == "sqlite":
            return {"journal_mode": "WAL", "synchronous": self.synchronous}
        if self.name == "postgres" and self.admin_dsn:
            import psycopg

            names = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "server_version")
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
        return {}


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
