"""Store URL parameters: every store honours ``max_event_size`` and refuses unknown or malformed ones; the
one option parser they share (``epoch.stores._urls``)."""

from __future__ import annotations

import pytest

from epoch import ConfigurationError, InvalidEvent, NewEvent, open_store
from epoch.stores._urls import Parser, count, event_size, flag, parse_query, seconds

_RANGE = "max_event_size must be an int from 1 to 1000000000 (bytes), not"


def _base(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return "sqlite://"
    if backend == "kurrentdb":
        return "kurrentdb://127.0.0.1:1?tls=false"
    return str(request.getfixturevalue("pg_dsn"))


def _with(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "kurrentdb"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "bad value for max_event_size in the store URL: 'abc' is not an int"),
        ("1.5", "bad value for max_event_size in the store URL: '1.5' is not an int"),
        ("", "bad value for max_event_size in the store URL: '' is not an int"),
        ("-1", f"{_RANGE} -1"),
        ("0", f"{_RANGE} 0"),
        (str(2**100), f"{_RANGE} {2**100}"),
    ],
)
async def test_malformed_max_event_size_is_refused(
    backend: str, value: str, message: str, request: pytest.FixtureRequest
) -> None:
    url = _with(_base(backend, request), f"max_event_size={value}")
    with pytest.raises(ConfigurationError) as info:
        await open_store(url)
    assert str(info.value) == message


async def test_max_event_size_in_the_url_is_honoured(store_url: str) -> None:
    async with open_store(_with(store_url, "max_event_size=100")) as store:
        assert store.max_event_size == 100  # type: ignore[attr-defined]
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [NewEvent("Big", b"x" * 90, b'{"a": 12345}')])
        assert (
            str(info.value) == "s-1: invalid event at index 0: 102 bytes of data and metadata exceed the limit of 100"
        )
        assert await store.head_position() == 0
        assert (await store.append("s-1", [NewEvent("Fits", b"x" * 88, b'{"a": 12345}')])).version == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://?maxeventsize=1", "unknown memory store URL parameter 'maxeventsize' in 'memory://?maxeventsize=1' (use max_event_size)"),
        ("memory://?max_event_size", "bad memory store URL parameters in 'memory://?max_event_size': bad query field: 'max_event_size'"),
        ("memory://somewhere", "a memory store URL names no host or path: 'memory://somewhere' (use memory://)"),
        ("sqlite://?bogus=1", "unknown SQLite URL parameter 'bogus' in 'sqlite://?bogus=1' (use max_event_size, synchronous, timeout, readers, inline_writes)"),
        ("sqlite://?readers=1000", "readers must be an int from 1 to 64, not 1000"),
        ("sqlite://?readers=x", "bad value for readers in the store URL: 'x' is not an int"),
        ("sqlite://?timeout=nan", "bad value for timeout in the store URL: 'nan' (a finite number of seconds >= 0)"),
        ("sqlite://?timeout=-1", "bad value for timeout in the store URL: '-1' (a finite number of seconds >= 0)"),
        ("sqlite://?readers", "bad SQLite URL parameters in 'sqlite://?readers': bad query field: 'readers'"),
        ("postgresql://u@127.0.0.1:1/db?migrate=maybe", "bad value for migrate in the store URL: 'maybe' (use true or false)"),
        ("postgresql://u@127.0.0.1:1/db?pool_max=0", "bad value for pool_max in the store URL: '0' (an int from 1 to 10000)"),
        ("postgresql://u@127.0.0.1:1/db?pool_timeout=inf", "bad value for pool_timeout in the store URL: 'inf' (a finite number of seconds >= 0)"),
        ("postgresql://u@127.0.0.1:1/db?poll_interval=-1", "bad value for poll_interval in the store URL: '-1' (a finite number of seconds >= 0)"),
        ("postgresql://u@127.0.0.1:1/db?statement_timeout=nan", "bad value for statement_timeout in the store URL: 'nan' (a finite number of seconds >= 0)"),
        (
            "postgresql://u:secret@127.0.0.1:1/db?max_events=5",
            'bad PostgreSQL store URL: invalid URI query parameter: "max_events" (epoch\'s parameters: migrate,'
            " pool_min, pool_max, pool_timeout, statement_timeout, idle_in_transaction_timeout, reconnect_timeout,"
            " poll_interval, visibility_timeout, max_event_size, pooler, prepared_statements; the others given: 'max_events')",
        ),
    ],
)  # fmt: skip
async def test_unknown_or_malformed_parameters_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        await open_store(url)
    assert str(info.value) == message
    assert "secret" not in str(info.value)


# -- stores/_urls.py: the one parser of epoch's query options ---------------------------------------


@pytest.mark.parametrize(
    ("parser", "value", "parsed"),
    [
        (flag, "TRUE", True),
        (flag, "yes", True),
        (flag, "1", True),
        (flag, "On", True),
        (flag, "off", False),
        (flag, "0", False),
        (flag, "No", False),
        (flag, "false", False),
        (count(1, 3), "1", 1),
        (count(1, 3), " 3 ", 3),
        (seconds, "0", 0.0),
        (seconds, "0.25", 0.25),
        (seconds, "30", 30.0),
        (event_size, "100", 100),
    ],
)
def test_option_parsers_read_good_values(parser: Parser, value: str, parsed: object) -> None:
    result = parser("opt", value)
    assert (result, type(result)) == (parsed, type(parsed))


@pytest.mark.parametrize(
    ("parser", "value", "message"),
    [
        (flag, "maybe", "bad value for opt in the store URL: 'maybe' (use true or false)"),
        (flag, "", "bad value for opt in the store URL: '' (use true or false)"),
        (count(1, 3), "0", "bad value for opt in the store URL: '0' (an int from 1 to 3)"),
        (count(1, 3), "4", "bad value for opt in the store URL: '4' (an int from 1 to 3)"),
        (count(1, 3), "two", "bad value for opt in the store URL: 'two' is not an int"),
        (seconds, "-0.5", "bad value for opt in the store URL: '-0.5' (a finite number of seconds >= 0)"),
        (seconds, "inf", "bad value for opt in the store URL: 'inf' (a finite number of seconds >= 0)"),
        (seconds, "nan", "bad value for opt in the store URL: 'nan' (a finite number of seconds >= 0)"),
        (seconds, "soon", "bad value for opt in the store URL: 'soon' (a finite number of seconds >= 0)"),
        (event_size, "0", f"{_RANGE} 0"),
        (event_size, "1e3", "bad value for opt in the store URL: '1e3' is not an int"),
    ],
)
def test_option_parsers_name_the_parameter_and_the_value(parser: Parser, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parser("opt", value)
    assert str(info.value) == message


_TABLE: dict[str, Parser] = {"size": count(0, 9), "wait": seconds, "on": flag}


def test_parse_query_parses_the_named_options_and_keeps_the_rest_in_order() -> None:
    query = "size=1&sslmode=require&wait=0.5&application_name=&size=2&on=yes&x=1"
    assert parse_query(query, _TABLE) == (
        {"size": 2, "wait": 0.5, "on": True},  # the last value given wins
        [("sslmode", "require"), ("application_name", ""), ("x", "1")],
    )
    assert parse_query("", _TABLE) == ({}, [])
    assert parse_query("a%20b=c%26d", {}) == ({}, [("a b", "c&d")])


def test_parse_query_raises_the_parsers_error_and_strict_refuses_a_field_without_a_value() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_query("size=10", _TABLE)
    assert str(info.value) == "bad value for size in the store URL: '10' (an int from 0 to 9)"
    assert parse_query("size", {}) == ({}, [("size", "")])
    with pytest.raises(ValueError, match=r"^bad query field: 'size'$"):
        parse_query("size", {}, strict=True)
    assert parse_query("", {}, strict=True) == ({}, [])
