"""PostgreSQL store URLs: a libpq URI plus epoch's own options as query parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from epoch.errors import ConfigurationError
from epoch.stores._urls import Parser, count, event_size, flag, parse_query, seconds

__all__ = ["OPTIONS", "parse_url"]

_MAX_POOL = 10_000

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
