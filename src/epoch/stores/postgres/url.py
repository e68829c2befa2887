"""Store URLs for PostgreSQL: a libpq URI plus epoch's own options as query parameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from epoch.errors import ConfigurationError
from epoch.stores._checks import check_max_event_size, url_int

__all__ = ["parse_url"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MAX_POOL = 10_000


def _flag(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (use true or false)")


def _count(low: int, high: int) -> Callable[[str, str], int]:
    def parse(key: str, value: str) -> int:
        number = url_int(key, value)
        if not low <= number <= high:
            raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (an int from {low} to {high})")
        return number

    return parse


def _seconds(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number < math.inf:
        raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (a finite number of seconds >= 0)")
    return number


def _event_size(key: str, value: str) -> int:
    return check_max_event_size(url_int(key, value))


_OPTIONS: dict[str, Callable[[str, str], Any]] = {
    "migrate": _flag,
    "pool_min": _count(0, _MAX_POOL),
    "pool_max": _count(1, _MAX_POOL),
    "pool_timeout": _seconds,
    "statement_timeout": _seconds,
    "idle_in_transaction_timeout": _seconds,
    "reconnect_timeout": _seconds,
    "poll_interval": _seconds,
    "visibility_timeout": _seconds,
    "max_event_size": _event_size,
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
            options[key] = _OPTIONS[key](key, value)
        else:
            rest.append((key, value))
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    try:
        # libpq's own parser: refuses a parameter that is neither epoch's nor libpq's (a typo), here.
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        unknown = ", ".join(repr(key) for key, _ in rest) or "none"
        raise ConfigurationError(
            f"bad PostgreSQL store URL: {str(exc).strip()} (epoch's parameters: {', '.join(_OPTIONS)};"
            f" the others given: {unknown})"
        ) from None
    return conninfo, options
