"""Store URL parameters: every store honours ``max_event_size`` and refuses unknown or malformed ones."""

from __future__ import annotations

import pytest

from epoch import ConfigurationError, InvalidEvent, NewEvent, open_store

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
        ("sqlite://?bogus=1", "unknown SQLite URL parameter 'bogus' in 'sqlite://?bogus=1' (use max_event_size, synchronous, timeout, readers)"),
        ("sqlite://?readers=1000", "readers must be an int from 1 to 64, not 1000"),
        ("sqlite://?readers=x", "bad value for readers in the store URL: 'x' is not an int"),
        ("postgresql://u@127.0.0.1:1/db?migrate=maybe", "bad value for migrate in the store URL: 'maybe' (use true or false)"),
        ("postgresql://u@127.0.0.1:1/db?pool_max=0", "bad value for pool_max in the store URL: '0' (an int from 1 to 10000)"),
        ("postgresql://u@127.0.0.1:1/db?pool_timeout=inf", "bad value for pool_timeout in the store URL: 'inf' (a finite number of seconds >= 0)"),
        ("postgresql://u@127.0.0.1:1/db?poll_interval=-1", "bad value for poll_interval in the store URL: '-1' (a finite number of seconds >= 0)"),
        ("postgresql://u@127.0.0.1:1/db?statement_timeout=nan", "bad value for statement_timeout in the store URL: 'nan' (a finite number of seconds >= 0)"),
        (
            "postgresql://u:secret@127.0.0.1:1/db?max_events=5",
            'bad PostgreSQL store URL: invalid URI query parameter: "max_events" (epoch\'s parameters: migrate,'
            " pool_min, pool_max, pool_timeout, statement_timeout, idle_in_transaction_timeout, reconnect_timeout,"
            " poll_interval, visibility_timeout, max_event_size; the others given: 'max_events')",
        ),
    ],
)  # fmt: skip
async def test_unknown_or_malformed_parameters_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        await open_store(url)
    assert str(info.value) == message
    assert "secret" not in str(info.value)
