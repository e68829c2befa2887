"""Property-based tests of the snapshot entries (``SupportsSnapshots``) with hostile input, on every store.

Only ``EpochError``s come out, a refused call stores
nothing, and what is accepted round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import NewEvent
from epoch.errors import InvalidStreamName, InvalidVersion
from epoch.records import category_of
from epoch.stores import SupportsSnapshots, snapshot_store
from tests.hostile import bad_numbers, hostile_json, hostile_names, is_valid_name
from tests.test_fuzz_stores import Opened


@pytest.fixture
def opened(store_url: str) -> Iterator[Opened]:
    handle = Opened(store_url)
    yield handle
    handle.close()


def _snapshots(opened: Opened) -> SupportsSnapshots:
    capable = snapshot_store(opened.store)
    assert capable is not None
    return capable


@given(name=hostile_names)
def test_hostile_stream_names(opened: Opened, name: str) -> None:
    snapshots = _snapshots(opened)
    before = opened.run(snapshots.snapshot_status())
    if not is_valid_name(name):
        for call in (
            lambda: snapshots.save_snapshot(name, 0, 1, b"x", 3),
            lambda: snapshots.load_snapshot(name, 1),
            lambda: snapshots.drop_snapshots(name),
            lambda: snapshots.snapshot_status(name),
        ):
            with pytest.raises(InvalidStreamName) as info:
                opened.run(call())
            assert info.value.stream == name
        assert opened.run(snapshots.snapshot_status()) == before
        return
    result = opened.run(opened.store.append(name, [NewEvent("Named", b"{}")]))
    assert result.version is not None
    assert opened.run(snapshots.save_snapshot(name, result.version, 1, b"state", 3)) is True
    found = opened.run(snapshots.load_snapshot(name, 1))
    assert found is not None and (found.stream, found.version, found.position, found.data) == (
        name,
        result.version,
        result.position,
        b"state",
    )
    category = category_of(name)  # empty for a name starting with '-': no category to ask for then
    listed = opened.run(snapshots.snapshot_status(category if is_valid_name(category) else None))
    assert name in [s.stream for s in listed]
    if "-" in name:  # a stream: dropped alone
        assert opened.run(snapshots.drop_snapshots(name)) == 1
        assert opened.run(snapshots.load_snapshot(name, 1)) is None


def _accepted(entry: str, number: Any) -> bool:
    """The reference rule: an int (not a bool) of 64 bits at most, >= 0 for a version, >= 1 for a schema
    version, 1 to 1000 for ``keep``."""
    if type(number) is not int:
        return False
    if entry == "keep":
        return 1 <= number <= 1000
    return (0 if entry == "version" else 1) <= number <= 2**63 - 1


@given(entry=st.sampled_from(["version", "schema_version", "keep", "at_most"]), number=bad_numbers)
def test_bad_numbers_on_every_entry(opened: Opened, entry: str, number: Any) -> None:
    snapshots = _snapshots(opened)
    stream = opened.stream()
    opened.run(opened.store.append(stream, [NewEvent("Seed", b"{}")]))
    if entry == "at_most":
        if type(number) is int and number >= 0:  # beyond 64 bits: past every version, so no bound
            assert opened.run(snapshots.load_snapshot(stream, 1, at_most=number)) is None
            return
        with pytest.raises(InvalidVersion) as info:
            opened.run(snapshots.load_snapshot(stream, 1, at_most=number))
        assert (info.value.stream, info.value.requested) == (stream, number)
        return
    args: dict[str, Any] = {"version": 0, "schema_version": 1, "keep": 3, entry: number}
    save = snapshots.save_snapshot(stream, args["version"], args["schema_version"], b"x", args["keep"])
    if not _accepted(entry, number):
        with pytest.raises(InvalidVersion) as raised:
            opened.run(save)
        assert (raised.value.stream, raised.value.requested) == (stream, number)
        assert opened.run(snapshots.snapshot_status(category_of(stream))) == []  # nothing stored
        return
    saved = opened.run(save)
    assert saved is (entry != "version")  # a version past the stream's only event is not snapshotted
    if saved:
        found = opened.run(snapshots.load_snapshot(stream, args["schema_version"]))
        assert found is not None and (found.version, found.schema_version) == (0, args["schema_version"])
        assert opened.run(snapshots.drop_snapshots(stream)) == 1


@given(data=st.binary(max_size=300) | hostile_json)
def test_any_bytes_round_trip(opened: Opened, data: bytes) -> None:
    snapshots = _snapshots(opened)
    stream = opened.stream()
    opened.run(opened.store.append(stream, [NewEvent("Seed", b"{}")]))
    assert opened.run(snapshots.save_snapshot(stream, 0, 1, data, 3)) is True
    found = opened.run(snapshots.load_snapshot(stream, 1))
    assert found is not None and found.data == data
