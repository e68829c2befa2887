"""PostgreSQL store URLs: a libpq URI plus epoch's own options as query parameters."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from epoch.errors import ConfigurationError
from epoch.stores._urls import Parser, count, event_size, flag, parse_query, seconds

__all__ = [
    "NETWORK_DEFAULTS",
    "OPTIONS",
    "POOLERS",
    "SERVER_KEEPALIVES",
    "check_pooler",
    "network_options",
    "parse_url",
    "prepare_options",
    "server_side",
]

_MAX_POOL = 10_000

POOLERS = ("none", "session", "transaction")
"""What sits between the store and the server: nothing, a session-pooling PgBouncer (which changes nothing
for a client: the same as ``none``), or a transaction-pooling one (PgBouncer ``pool_mode = transaction``)."""


def check_pooler(value: object, key: str = "pooler") -> str:
    """``value`` when it is one of :data:`POOLERS`; else ``ConfigurationError`` naming them."""
    if value not in POOLERS:
        raise ConfigurationError(f"bad value for {key}: {value!r} (use none, session or transaction)")
    return str(value)


def _pooler(key: str, value: str) -> str:
    return check_pooler(value.lower(), key)


_CLOSES_PREPARED = 170_000
"""libpq 17 closes a prepared statement with a protocol message (``PQsendClosePrepared``), which a
transaction pooler follows; before it psycopg sends ``DEALLOCATE``, which PgBouncer refuses."""


def prepare_options(pooler: str, prepared: bool | None) -> tuple[int | None, int | None]:
    """``(prepare_threshold, prepared_max)`` for the store's connections.

    ``prepared`` (``None``: the pooler's default) turns server-side prepared statements on or off.
    Without a transaction pooler they are on: every statement is prepared at its first run, which saves
    the server's parse and plan of the next ones. Through a transaction pooler they are off unless asked
    for: a statement may run on another server connection than the one it was prepared on, which only
    PgBouncer 1.22+ with ``max_prepared_statements`` set follows. Asked for there with a libpq older than
    17, none is ever deallocated (``prepared_max`` unbounded), since the pooler refuses ``DEALLOCATE``.
    """
    if prepared is not None and not isinstance(prepared, bool):
        raise ConfigurationError(f"bad value for prepared_statements: {prepared!r} (use True, False or None)")
    transaction = pooler == "transaction"
    on = not transaction if prepared is None else prepared
    if not on:
        return None, None
    keep_all = transaction and psycopg.pq.version() < _CLOSES_PREPARED
    return 0, (sys.maxsize if keep_all else None)


OPTIONS: dict[str, Parser] = {
    "migrate": flag,
    "pool_min": count(0, _MAX_POOL),
    "pool_max": count(1, _MAX_POOL),
    "pool_timeout": seconds,
    "statement_timeout": seconds,
    "idle_in_transaction_timeout": seconds,
    "reconnect_timeout": seconds,
    "poll_interval": seconds,
    "visibility_timeout": seconds,
    "max_event_size": event_size,
    "pooler": _pooler,
    "prepared_statements": flag,
}
"""epoch's query parameters, named as :class:`~epoch.stores.postgres.PostgresEventStore`'s options."""


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a store URL into a libpq URI and epoch's own options (the query parameters in :data:`OPTIONS`)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a PostgreSQL URL: {url!r}")
    options, rest = parse_query(parts.query, OPTIONS)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    try:
        # libpq's own parser: refuses a parameter that is neither epoch's nor libpq's (a typo), here.
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        unknown = ", ".join(repr(key) for key, _ in rest) or "none"
        raise ConfigurationError(
            f"bad PostgreSQL store URL: {str(exc).strip()} (epoch's parameters: {', '.join(OPTIONS)};"
            f" the others given: {unknown})"
        ) from None
    return conninfo, options


NETWORK_DEFAULTS: dict[str, str] = {
    "connect_timeout": "5",  # seconds to open a connection (libpq counts it per host address)
    "keepalives": "1",
    "keepalives_idle": "2",  # seconds quiet before the first probe
    "keepalives_interval": "1",  # seconds between probes
    "keepalives_count": "3",  # unanswered probes before the connection counts as dead
    "tcp_user_timeout": "5000",  # ms a sent request may stay unacknowledged (a cut link during a write)
}
"""libpq's network parameters as epoch sets them unless the URL names them: a client cut off from the
server sees its connection fail within about 5 s (``keepalives_idle`` + ``keepalives_interval`` *
``keepalives_count``, or ``tcp_user_timeout`` while a request is unacknowledged) rather than after the
kernel's defaults (hours idle, about 15 minutes for unacknowledged data)."""

SERVER_KEEPALIVES = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")
"""The server's settings of the same names, set per session from the client's values (see :func:`server_side`)."""


def network_options(conninfo: str) -> dict[str, Any]:
    """The :data:`NETWORK_DEFAULTS` that ``conninfo`` does not set itself, as keyword arguments of a connect."""
    given = conninfo_to_dict(conninfo)
    return {key: value for key, value in NETWORK_DEFAULTS.items() if key not in given}


def server_side(conninfo: str) -> tuple[str, str, str, str]:
    """The values of :data:`SERVER_KEEPALIVES` for a session of ``conninfo``: the server probes a quiet
    client as the client probes the server, so a session whose client was cut off ends (and its locks and
    advisory-lock leases are released) within the same bound. ``tcp_user_timeout`` is in ms on both sides."""
    given = {**NETWORK_DEFAULTS, **{key: str(value) for key, value in conninfo_to_dict(conninfo).items()}}
    if given.get("keepalives") == "0":  # keepalives off on the client: leave the server's own settings
        return ("0", "0", "0", given["tcp_user_timeout"])
    return (
        given["keepalives_idle"],
        given["keepalives_interval"],
        given["keepalives_count"],
        given["tcp_user_timeout"],
    )
