"""Property-based tests of the lifecycle entries (DESIGN §8) with hostile input, on every store.

``truncate_before``, ``set_stream_limits``, ``delete_stream(hard=...)`` and ``scavenge`` take names,
numbers and durations: only ``EpochError``s may come out, a refused call changes nothing stored, and an
accepted one does what it says. Reuses one store per test (``test_fuzz_stores.Opened``).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from epoch import ANY, NewEvent
from epoch.errors import EpochError, InvalidStreamName, InvalidVersion, StreamDeleted
from epoch.testing import collect
from tests.hostile import bad_numbers, hostile_names, huge_ints, is_valid_name
from tests.test_fuzz_stores import Opened, opened

__all__ = ["opened"]

_durations = st.one_of(
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=365 * 1100)),
    st.sampled_from([timedelta(0), timedelta(microseconds=1), timedelta.max, timedelta.min]),
    st.sampled_from([0, 1, 1.5, math.nan, "1 day", b"1", True]),
)


def seeded(opened: Opened, n: int = 3) -> tuple[str, int, list[int]]:
    stream = opened.stream()
    opened.run(opened.store.append(stream, [NewEvent("Seed", b"{}") for _ in range(n)]))
    versions = [e.version for e in opened.run(collect(opened.store.read_stream(stream)))]
    return stream, opened.run(opened.store.head_position()), versions


def unchanged(opened: Opened, stream: str, head: int, versions: list[int]) -> None:
    assert opened.run(opened.store.head_position()) == head
    assert [e.version for e in opened.run(collect(opened.store.read_stream(stream)))] == versions


def tombstoned(opened: Opened, name: str) -> bool:
    """Whether ``name`` is a tombstone already: an earlier example of the test, on the same store, drew
    the same name and deleted it for good (an empty append refuses only a tombstone)."""
    try:
        opened.run(opened.store.append(name, [], ANY))
    except StreamDeleted:
        return True
    except EpochError:  # an invalid name: the calls below must refuse it as such
        return False
    return False


@given(name=hostile_names)
def test_hostile_names_on_every_lifecycle_entry(opened: Opened, name: str) -> None:
    store = opened.store
    stream, head, versions = seeded(opened)
    deleted_before = tombstoned(opened, name)
    calls = (  # the tombstone last: the others refuse a tombstoned stream
        lambda: store.truncate_before(name, 1),
        lambda: store.set_stream_limits(name, max_count=1),
        lambda: store.scavenge(name),
        lambda: store.delete_stream(name, hard=True),
    )
    for call in calls:
        try:
            opened.run(call())
        except InvalidStreamName as exc:
            assert not is_valid_name(name) or name.startswith("$"), exc
        except StreamDeleted as exc:  # only a tombstone made by an earlier example refuses these
            assert deleted_before and str(exc) == f"{name}: the stream is deleted (last version no stream)", exc
        except EpochError as exc:  # pragma: no cover - a failure, with the error shown
            raise AssertionError(f"{name!r} raised {type(exc).__name__}: {exc}") from exc
        else:
            assert is_valid_name(name)
    unchanged(opened, stream, head, versions)  # another stream: untouched whatever the name did


@given(number=st.one_of(bad_numbers, huge_ints, st.integers(0, 10)))
def test_hostile_numbers_on_truncate_before(opened: Opened, number: Any) -> None:
    stream, head, versions = seeded(opened)
    valid = isinstance(number, int) and not isinstance(number, bool) and number >= 0
    try:
        opened.run(opened.store.truncate_before(stream, number))
    except InvalidVersion as exc:
        assert not valid and str(exc) == f"{stream}: invalid version {number!r}"
        unchanged(opened, stream, head, versions)
        return
    assert valid
    left = [e.version for e in opened.run(collect(opened.store.read_stream(stream)))]
    assert left == [v for v in versions if v >= number]


@given(count=st.one_of(bad_numbers, huge_ints, st.integers(-2, 5), st.none()), age=st.one_of(_durations, st.none()))
def test_hostile_limits(opened: Opened, count: Any, age: Any) -> None:
    stream, head, versions = seeded(opened)
    count_ok = count is None or (isinstance(count, int) and not isinstance(count, bool) and count >= 1)
    age_ok = age is None or (
        isinstance(age, timedelta) and timedelta(microseconds=1) <= age <= timedelta(days=365 * 1000)
    )
    try:
        opened.run(opened.store.set_stream_limits(stream, max_count=count, max_age=age))
    except InvalidVersion as exc:
        assert not (count_ok and age_ok), exc
        unchanged(opened, stream, head, versions)
        assert opened.run(opened.store.scavenge(stream)) == 0
        return
    assert count_ok and age_ok
    kept = [e.version for e in opened.run(collect(opened.store.read_stream(stream)))]
    expected = versions if count is None else versions[-count:]
    if age is None or age >= timedelta(minutes=10):  # no event is that old yet
        assert kept == expected
    else:  # the newest of them, as many as are younger than the age
        assert kept == expected[len(expected) - len(kept) :]
    opened.run(opened.store.set_stream_limits(stream))  # the limits can always be removed again
    assert len(opened.run(collect(opened.store.read_stream(stream)))) >= len(kept)


@given(hard=st.one_of(st.booleans(), st.sampled_from([0, 1, "yes", "", None, 1.0, b"1"])))
def test_hostile_hard_flag(opened: Opened, hard: Any) -> None:
    stream, head, versions = seeded(opened)
    try:
        opened.run(opened.store.delete_stream(stream, hard=hard))
    except InvalidVersion as exc:
        assert not isinstance(hard, bool)
        assert str(exc) == f"{stream}: invalid version {f'hard={hard!r}'!r}"
        unchanged(opened, stream, head, versions)
        return
    assert isinstance(hard, bool)
    assert opened.run(opened.store.stream_version(stream)) is None
