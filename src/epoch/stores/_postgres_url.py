"""Store URLs for PostgreSQL: a libpq URI plus epoch's own options as query parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from epoch.errors import ConfigurationError

__all__ = ["parse_url"]

_TRUE = ("1", "true", "yes", "on")
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "migrate": lambda v: v.lower() in _TRUE,
    "pool_min": int,
    "pool_max": int,
    "pool_timeout": float,
    "statement_timeout": float,
    "idle_in_transaction_timeout": float,
    "reconnect_timeout": float,
    "poll_interval": float,
    "visibility_timeout": float,
    "max_event_size": int,
}


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a store URL into a libpq URI and epoch's own options (query parameters named in ``_OPTIONS``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a PostgreSQL URL: {url!r}")
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTIONS:
            try:
                options[key] = _OPTIONS[key](value)
            except ValueError:
                raise ConfigurationError(f"bad value for {key} in the store URL: {value!r}") from None
        else:
            rest.append((key, value))
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    return conninfo, options
