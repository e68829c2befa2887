"""Store URLs' query options: one parser for epoch's own parameters, whatever the backend.

A backend names its options in a table, ``{name: parser}``, and :func:`parse_query` splits a URL's query
string into those options (each value parsed, or ``ConfigurationError`` naming the parameter) and the
other parameters, in order, which the backend hands to its driver or refuses. A parser takes the
parameter's name and raw text: ``flag``, ``seconds``, ``event_size``, or ``count(low, high)``.

Messages quote the value, never the URL (it may hold a password).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from epoch.errors import ConfigurationError
from epoch.stores._checks import check_max_event_size, url_int

__all__ = ["Parser", "count", "event_size", "flag", "integer", "only_options", "parse_query", "seconds", "text"]

Parser = Callable[[str, str], Any]
"""``parser(name, raw_value)``: the option's value, or ``ConfigurationError`` naming the parameter."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(key: str, value: str) -> bool:
    """A yes/no parameter: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case."""
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (use true or false)")


def count(low: int, high: int) -> Callable[[str, str], int]:
    """A parser of an int parameter from ``low`` to ``high`` (both included)."""

    def parse(key: str, value: str) -> int:
        number = url_int(key, value)
        if not low <= number <= high:
            raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (an int from {low} to {high})")
        return number

    return parse


def seconds(key: str, value: str) -> float:
    """A duration parameter: a finite number of seconds, ``0`` or more (``0.5``, ``30``)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number < math.inf:
        raise ConfigurationError(f"bad value for {key} in the store URL: {value!r} (a finite number of seconds >= 0)")
    return number


def integer(key: str, value: str) -> int:
    """An int parameter the store range-checks itself (ASCII digits)."""
    return url_int(key, value)


def text(key: str, value: str) -> str:
    """A parameter the store checks itself (e.g. ``synchronous=FULL``)."""
    return value


def event_size(key: str, value: str) -> int:
    """``max_event_size``: an int of bytes, in the range every store accepts."""
    return check_max_event_size(url_int(key, value))


def parse_query(
    query: str, options: Mapping[str, Parser], *, strict: bool = False
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Split a URL's query string into epoch's options and the other parameters.

    Returns ``({name: parsed value}, [(name, raw value), ...])``: a parameter named in ``options`` is
    parsed by its parser (the last one given wins); every other one is kept, in order, for the caller.
    Blank values are kept (``?migrate=`` reaches the parser as ``""``). With ``strict``, a field without
    ``=`` raises ``ValueError`` (from :func:`urllib.parse.parse_qsl`), for the caller to word.
    """
    parsed: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=strict and bool(query)):
        if key in options:
            parsed[key] = options[key](key, value)
        else:
            rest.append((key, value))
    return parsed, rest


def only_options(url: str, query: str, options: Mapping[str, Parser], store: str) -> dict[str, Any]:
    """epoch's options of a URL that takes no other parameter (memory, SQLite: no driver to hand them to).

    A malformed query, or a parameter not in ``options``, raises ``ConfigurationError`` naming the URL
    (these URLs hold no password) and, for an unknown parameter, the known ones: ``unknown SQLite URL
    parameter 'bogus' in 'sqlite://?bogus=1' (use max_event_size, ...)``.
    """
    try:
        parsed, rest = parse_query(query, options, strict=True)
    except ConfigurationError:
        raise
    except ValueError as exc:
        raise ConfigurationError(f"bad {store} URL parameters in {url!r}: {exc}") from None
    if rest:
        known = ", ".join(options)
        raise ConfigurationError(f"unknown {store} URL parameter {rest[0][0]!r} in {url!r} (use {known})")
    return parsed
