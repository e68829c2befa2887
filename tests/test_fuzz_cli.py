"""Fuzzing the command line: hostile stored bytes, stream names, categories and numbers (issue 8 item 7).

Each test keeps one real SQLite store for all its examples; ``epoch`` runs in-process through typer's
``CliRunner``, which goes through the same error handling as the console script. A command either
succeeds (exit 0, and ``--json`` output is JSON that gives back every stored byte), fails with an epoch
error (exit 1, one line ``error: ...`` on stderr), or rejects a malformed option (exit 2, one line
``error: ...`` and at most one ``try 'epoch ... --help'`` line); it never shows a traceback. The number of examples comes from the hypothesis profile
(tests/hostile.py).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from epoch import NewEvent, open_store
from epoch._payload import MAX_DEPTH, bytes_of, escape_text, payload_of
from epoch.cli import app
from tests.hostile import any_text, bad_numbers, hostile_json, hostile_names, is_valid_name
from tests.payloads import SHOWN_AS_BYTES

RUNNER = CliRunner()
COUNTER = itertools.count()  # a fresh stream per example: the store is shared by all of a test's examples
MARKUP = st.builds(lambda text: json.dumps({"html": f"<script>{text}</script>"}).encode(), any_text)
stored_bytes = st.one_of(hostile_json, MARKUP, st.sampled_from(list(SHOWN_AS_BYTES.values())))


def epoch(*args: str) -> Result:
    return RUNNER.invoke(app, list(args))


def assert_clean(done: Result) -> None:
    """Exit 0, or an epoch error on one line (exit 1), or a usage error (exit 2): never a traceback."""
    assert done.exception is None or isinstance(done.exception, SystemExit), repr(done.exception)
    assert "Traceback" not in done.output
    if done.exit_code == 1:
        assert done.stdout == ""
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    elif done.exit_code == 2:
        assert done.stdout == ""
        first, _, rest = done.stderr.partition("\n")
        assert first.startswith("error: ") and first.isprintable(), done.stderr
        assert rest == "" or re.fullmatch(r"try 'epoch [a-z ]+ --help'\n", rest), done.stderr
    else:
        assert done.exit_code == 0, done.output


def is_printable_lines(text: str) -> bool:
    return text.endswith("\n") and all(line.isprintable() for line in text[:-1].split("\n"))


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"

    async def create() -> None:
        async with open_store(url) as store:
            await store.append("known-1", [NewEvent("Known", b"{}")])

    asyncio.run(create())
    return url


def append(url: str, stream: str, data: bytes) -> int:
    async def run() -> int:
        async with open_store(url) as store:
            return (await store.append(stream, [NewEvent("Fuzzed", data)])).position

    return asyncio.run(run())


def assert_shows(shown: object, raw: bytes) -> None:
    """``shown`` (from ``--json``) is ``raw``: exactly its bytes, or the same JSON value."""
    payload = payload_of(raw)
    if payload.kind == "json":
        assert shown == json.loads(raw)
        assert bytes_of(shown) is None  # never mistaken for bytes
    else:
        assert bytes_of(shown) == raw
        assert shown == ({"$bytes": base64.b64encode(raw).decode()} if raw else None)


@given(raw=stored_bytes)
@example(raw=b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
@example(raw=b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
def test_read_and_tail_show_any_stored_bytes(store_url: str, raw: bytes) -> None:
    stream = f"fuzz-{next(COUNTER)}"
    position = append(store_url, stream, raw)

    read = epoch("read", "--store", store_url, "--json", "--", stream)
    assert_clean(read)
    [event] = json.loads(read.stdout)
    assert (event["stream"], event["version"], event["position"], event["type"]) == (stream, 0, position, "Fuzzed")
    assert_shows(event["data"], raw)
    assert event["metadata"] is None

    tail = epoch("tail", "--store", store_url, "--json", "--after", str(position - 1))
    assert_clean(tail)
    assert tail.stdout.count("\n") == 1 and json.loads(tail.stdout) == event

    plain = epoch("read", "--store", store_url, "--", stream)
    assert_clean(plain)
    assert plain.stdout.count("\n") == 1 and is_printable_lines(plain.stdout)
    assert plain.stdout.startswith(f"{position:>8}  {stream}@0  Fuzzed  ")


@given(name=hostile_names)
@example(name="-a")
@example(name="--")
def test_read_any_stream_name(store_url: str, name: str) -> None:
    for args in (["read", "--store", store_url, "--json", "--", name], ["read", "--store", store_url, "--", name]):
        done = epoch(*args)
        assert_clean(done)
        if name == "known-1":
            assert done.exit_code == 0
        elif is_valid_name(name):  # any other valid name is a stream never written: an error, not an empty list
            assert (done.exit_code, done.stdout) == (1, "")
            assert done.stderr == f"error: no stream {escape_text(repr(name))} in {store_url}\n"
        else:
            assert done.exit_code == 1
            assert done.stderr.startswith(f"error: invalid stream name {name!r}: ")


@given(category=st.one_of(hostile_names, any_text))
def test_streams_and_tail_any_category(store_url: str, category: str) -> None:
    for args in (
        ["streams", "--store", store_url, "--json", "--category", category],
        ["streams", "--store", store_url, "--category", category],
        ["tail", "--store", store_url, "--json", "--after", "0", "--category", category],
    ):
        done = epoch(*args)
        assert_clean(done)
        if is_valid_name(category) and "-" not in category:
            assert done.exit_code == 0
            if category != "known":  # any other category has no events
                assert (
                    done.stdout == {"streams": "0 streams\n", "tail": ""}[args[0]]
                    if "--json" not in args
                    else (done.stdout == ("[]\n" if args[0] == "streams" else ""))
                )
        else:
            assert done.exit_code == 1
            assert done.stderr.startswith(f"error: invalid stream name {category!r}: "), done.stderr


def as_option(value: object) -> int | None:
    """The int an ``int`` option takes from ``str(value)``, or ``None`` when it is a usage error."""
    if isinstance(value, float) and value.is_integer():
        return int(value)  # typer takes "1.0" for 1
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


@given(
    option=st.sampled_from(["--from", "--limit"]),
    value=bad_numbers,
    backwards=st.booleans(),
)
def test_read_any_number(store_url: str, option: str, value: object, backwards: bool) -> None:
    args = ["read", "--store", store_url, "--json", *(["--backwards"] if backwards else []), option, str(value)]
    done = epoch(*args, "--", "known-1")
    assert_clean(done)
    number = as_option(value)
    if number is None:
        assert done.exit_code == 2
    elif number < 0:
        assert done.exit_code == 1 and done.stderr.startswith("error: known-1: invalid version ")
    else:  # known-1 holds one event, at version 0
        shown = [e["version"] for e in json.loads(done.stdout)]
        if option == "--limit":
            assert shown == ([0] if number > 0 else [])
        else:
            assert shown == ([0] if number == 0 or backwards else [])


@given(value=bad_numbers)
def test_tail_any_position(store_url: str, value: object) -> None:
    done = epoch("tail", "--store", store_url, "--json", "--after", str(value))
    assert_clean(done)
    number = as_option(value)
    if number is None:
        assert done.exit_code == 2
    elif number < 0:
        assert done.exit_code == 1 and done.stderr.startswith("error: $all: invalid version ")
    else:  # the log holds one event, at position 1
        assert [json.loads(line)["position"] for line in done.stdout.split("\n")[:-1]] == ([1] if number == 0 else [])


@pytest.mark.parametrize("value", [2**63, 2**64, 2**100])
@pytest.mark.parametrize("command", ["read", "tail"])
def test_versions_and_positions_beyond_64_bits(store_url: str, command: str, value: int) -> None:
    if command == "read":
        done = epoch("read", "--store", store_url, "--json", "--from", str(value), "--", "known-1")
    else:
        done = epoch("tail", "--store", store_url, "--json", "--after", str(value))
    assert_clean(done)
    assert (done.exit_code, done.stdout) == (0, "[]\n" if command == "read" else "")
