"""Dynamic consistency boundaries (DESIGN §8), part one: tags on events and ``read_query``.

Tags round-trip on every store. The three boundary operations (``read_query``, ``append_with_condition``,
``append_many``) are a capability each store declares in ``boundary_operations``, a frozenset of the
names it serves (memory, SQLite: all three). An operation a store leaves out must raise ``NotSupported``
(after the usual input checks); the suite reads the declaration and asserts the declared behaviour
exactly, either way, and a store that declares nothing fails :meth:`test_boundary_operations_are_declared`.
The conditions, ``append_many`` and the racing claimants are in ``contract_dcb_appends``.
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast

import pytest

from epoch.errors import InvalidEvent, InvalidQuery, InvalidVersion, NotSupported
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import ANY, NewEvent, RecordedEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events, nothing_stored
from epoch.testing._subscriptions import take
from epoch.testing.contract_numbers import HUGE_INTS

__all__ = [
    "BOUNDARY_OPERATIONS",
    "TAG_CHARACTERS",
    "TagsAndQueriesContract",
    "boundary_operations",
    "query",
    "refuses",
    "requires",
    "serves",
    "tagged",
]

BOUNDARY_OPERATIONS = frozenset({"read_query", "append_with_condition", "append_many"})
"""Every operation a store may declare in ``boundary_operations``."""

TAG_CHARACTERS = {
    "Lu": "A", "Ll": "a", "Lt": "\u01c5", "Lm": "\u02b0", "Lo": "\u05d0", "Mn": "\u0301", "Mc": "\u0903",
    "Me": "\u20dd", "Nd": "\u0663", "Nl": "\u216b", "No": "\u00bd", "Pc": "_", "Pd": "-", "Ps": "(",
    "Pe": ")", "Pi": "\u00ab", "Pf": "\u00bb", "Po": "!", "Sm": "+", "Sc": "$", "Sk": "^", "So": "\u00a9",
    "Zs": "\u3000", "Zl": "\u2028", "Zp": "\u2029", "Cc": "\x85", "Cf": "\u200b", "Cs": "\ud800",
    "Co": "\ue000", "Cn": "\u0378",
}  # fmt: skip
"""One character of every Unicode general category; inside a tag all are data but Cc and Cs."""


class Kind(enum.StrEnum):
    """Event types as a ``StrEnum``."""

    REGISTERED = "UserRegistered"
    PADDED = " UserRegistered"


class Tag(str, enum.Enum):
    """A tag as a ``str``-mixin enum: ``str(Tag.USER)`` is ``"Tag.USER"``, its value ``"user:1"``."""

    USER = "user:1"


def boundary_operations(store: object) -> frozenset[str]:
    """What ``store`` declares; raises ``AttributeError`` when it declares nothing."""
    declared = getattr(store, "boundary_operations")  # noqa: B009 - no default, on purpose
    if not isinstance(declared, frozenset) or not declared <= BOUNDARY_OPERATIONS:
        raise TypeError(
            f"{type(store).__name__}.boundary_operations must be a frozenset of {sorted(BOUNDARY_OPERATIONS)}"
        )
    return declared


def serves(store: object, operation: str) -> bool:
    """Whether ``store`` declares ``operation``; the tests of an undeclared one expect ``NotSupported``."""
    return operation in boundary_operations(store)


def tagged(type: str, *tags: str, n: int = 0) -> NewEvent:
    """A fresh event of ``type`` carrying ``tags`` (data ``{"n": n}``)."""
    return NewEvent(type, b'{"n": %d}' % n, b"", tags=tags)


async def query(store: EventStore, q: Query, after: int = 0, limit: int | None = None) -> list[RecordedEvent]:
    """``read_query`` collected."""
    return await collect(store.read_query(q, after, limit))


async def refuses(store: EventStore, operation: str) -> None:
    """Assert that ``store`` answers ``operation`` with ``NotSupported`` naming it, and writes nothing."""
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "read_query": lambda: collect(store.read_query(Query.all())),
        "append_with_condition": lambda: store.append_with_condition(
            "refused-1", [tagged("T")], AppendCondition(Query([]))
        ),
        "append_many": lambda: store.append_many([("refused-1", [tagged("T")], ANY)]),
    }
    head = await store.head_position()
    with pytest.raises(NotSupported) as info:
        await calls[operation]()
    assert (info.value.store, info.value.operation) == (type(store).__name__, operation)
    assert await store.head_position() == head


T = TypeVar("T", bound=Callable[..., Awaitable[None]])


def requires(*operations: str) -> Callable[[T], T]:
    """Run the test where the store declares ``operations``; elsewhere assert that each undeclared one
    raises ``NotSupported`` (the declared behaviour, so the test passes rather than skips)."""

    def decorate(test: T) -> T:
        @functools.wraps(test)
        async def run(self: object, *args: Any, **kwargs: Any) -> None:
            store: EventStore = kwargs["store"]
            missing = [operation for operation in operations if not serves(store, operation)]
            for operation in missing:
                await refuses(store, operation)
            if not missing:
                await test(self, *args, **kwargs)

        return cast("T", run)

    return decorate


class TagsAndQueriesContract:
    """Tags are stored de-duplicated in order and read back everywhere; ``read_query`` selects by type and tag."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    async def test_boundary_operations_are_declared(self, store: EventStore) -> None:
        assert boundary_operations(store) <= BOUNDARY_OPERATIONS

    # -- tags -----------------------------------------------------------------------------------

    async def test_tags_round_trip(self, store: EventStore) -> None:
        events = [tagged("Registered", "user:42", "username:ada"), NewEvent("Plain", b"{}")]
        result = await store.append("users-42", events)
        expected = [("user:42", "username:ada"), ()]
        assert [r.tags for r in await collect(store.read_stream("users-42"))] == expected
        assert [r.tags for r in await collect(store.read_stream("users-42", backwards=True))] == expected[::-1]
        assert [r.tags for r in await collect(store.read_all())] == expected
        assert [r.tags for r in await collect(store.read_all(categories="users"))] == expected
        found = await store.get_event(events[0].id)
        assert found is not None and found.tags == ("user:42", "username:ada")
        assert all(type(r.tags) is tuple for r in await collect(store.read_all()))
        assert [r.tags for r in await take(store, 2)] == expected  # subscribe too
        assert result.positions == tuple(r.position for r in await collect(store.read_all()))

    async def test_tags_are_de_duplicated_in_order(self, store: EventStore) -> None:
        await store.append("s-1", [tagged("T", "b", "a", "b", "c", "a"), NewEvent("T", b"{}", tags=["y", "x", "y"])])  # type: ignore[arg-type]
        assert [r.tags for r in await collect(store.read_stream("s-1"))] == [("b", "a", "c"), ("y", "x")]

    async def test_str_subclass_types_and_tags_are_stored_as_their_plain_value(self, store: EventStore) -> None:
        """A ``StrEnum`` member (or a ``str``-mixin enum's, whose ``str()`` is ``"Tag.USER"``) is its value."""
        event = NewEvent(Kind.REGISTERED, b"{}", tags=(Tag.USER, Kind.REGISTERED, "user:1"))
        await store.append("users-1", [event])
        reads = [*await collect(store.read_stream("users-1")), *await collect(store.read_all())]
        reads.append(cast("RecordedEvent", await store.get_event(event.id)))
        if serves(store, "read_query"):
            reads += await query(store, Query([QueryItem(types=(Kind.REGISTERED,), tags=(Tag.USER,))]))
        assert [(r.type, r.tags) for r in reads] == [("UserRegistered", ("user:1", "UserRegistered"))] * len(reads)
        assert {type(name) for r in reads for name in (r.type, *r.tags)} == {str}
        with pytest.raises(InvalidEvent) as info:
            await store.append("users-1", [NewEvent(Kind.PADDED, b"{}")])
        assert str(info.value) == (
            "users-1: invalid event at index 0: event type ' UserRegistered' has leading or trailing whitespace"
        )
        assert await store.stream_version("users-1") == 0

    async def test_many_and_long_tags_round_trip(self, store: EventStore) -> None:
        tags = (*(f"tag:{i}" for i in range(100)), "x" * 256, "it's; DROP TABLE event_tags;--", 'q"uote')
        await store.append("s-1", [NewEvent("T", b"{}", tags=tags)])
        assert [r.tags for r in await collect(store.read_stream("s-1"))] == [tags]

    async def test_tags_of_every_unicode_category(self, store: EventStore) -> None:
        assert {name: unicodedata.category(c) for name, c in TAG_CHARACTERS.items()} == {n: n for n in TAG_CHARACTERS}
        valid = [f"t{c}t" for name, c in TAG_CHARACTERS.items() if name not in ("Cc", "Cs")]
        await store.append("s-1", [NewEvent("T", b"{}", tags=tuple(valid))])
        assert [r.tags for r in await collect(store.read_all())] == [tuple(valid)]
        for name, reason in (("Cc", "contains a control character"), ("Cs", "contains a lone surrogate")):
            tag = f"t{TAG_CHARACTERS[name]}t"
            with pytest.raises(InvalidEvent) as info:
                await store.append("s-2", [NewEvent("T", b"{}", tags=("fine", tag))])
            assert str(info.value) == f"s-2: invalid event at index 0: tag {tag!r} {reason}"
        assert await store.stream_version("s-2") is None

    @pytest.mark.parametrize(
        ("tags", "reason"),
        [
            (("",), "tag '' must have 1 to 256 characters, not 0"),
            (("x" * 257,), f"tag {'x' * 257!r} must have 1 to 256 characters, not 257"),
            ((" lead",), "tag ' lead' has leading or trailing whitespace"),
            (("trail\u3000",), "tag 'trail\\u3000' has leading or trailing whitespace"),
            (("ok", "c\ntl"), "tag 'c\\ntl' contains a control character"),
            (("nul\x00",), "tag 'nul\\x00' contains a control character"),
            (("lone\udfff",), "tag 'lone\\udfff' contains a lone surrogate"),
            (("ok", 42), "tag 42 must be a str, not int"),
            ((b"bytes",), "tag b'bytes' must be a str, not bytes"),
            ("user:42", "tags must be a tuple of strings, not str"),
            (b"user:42", "tags must be a tuple of strings, not bytes"),
            (None, "tags must be a tuple of strings, not NoneType"),
            ({"a"}, "tags must be a tuple of strings, not set"),
            (42, "tags must be a tuple of strings, not int"),
        ],
    )
    async def test_bad_tags_are_refused(self, store: EventStore, tags: Any, reason: str) -> None:
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [tagged("T", "fine"), NewEvent("T", b"{}", tags=tags)])
        assert (info.value.stream, info.value.index, info.value.reason) == ("s-1", 1, reason)
        assert str(info.value) == f"s-1: invalid event at index 1: {reason}"
        assert await nothing_stored(store, "s-1")

    # -- read_query -----------------------------------------------------------------------------

    async def _courses(self, store: EventStore) -> list[tuple[str, int]]:
        """Six events over three streams; returns ``(label, position)`` in log order."""
        written = [
            ("course-1", tagged("CourseDefined", "course:1")),
            ("course-2", tagged("CourseDefined", "course:2")),
            ("student-1", tagged("StudentRegistered", "student:1")),
            ("course-1", tagged("StudentSubscribed", "course:1", "student:1")),
            ("course-2", tagged("StudentSubscribed", "student:1", "course:2", "term:2026")),
            ("student-1", NewEvent("StudentRenamed", b"{}")),
        ]
        labels = ["def1", "def2", "reg", "sub1", "sub2", "rename"]
        positions = []
        for stream, event in written:
            positions.append((await store.append(stream, [event])).position)
        return list(zip(labels, positions, strict=True))

    @staticmethod
    def _labels(log: list[tuple[str, int]], events: list[RecordedEvent]) -> list[str]:
        by_position = dict((position, label) for label, position in log)
        return [by_position[event.position] for event in events]

    @requires("read_query")
    async def test_read_query_by_types_tags_and_both(self, store: EventStore) -> None:
        log = await self._courses(store)
        cases = [
            (Query([QueryItem(types=("CourseDefined",))]), ["def1", "def2"]),
            (Query([QueryItem(types=("CourseDefined", "StudentRenamed"))]), ["def1", "def2", "rename"]),
            (Query([QueryItem(tags=("student:1",))]), ["reg", "sub1", "sub2"]),
            (Query([QueryItem(tags=("course:2", "student:1"))]), ["sub2"]),  # every tag of the item, in any order
            (Query([QueryItem(types=("StudentSubscribed",), tags=("course:1",))]), ["sub1"]),
            (Query([QueryItem(types=("CourseDefined",), tags=("student:1",))]), []),
            (Query([QueryItem(tags=("course:1",)), QueryItem(tags=("student:1",))]), ["def1", "reg", "sub1", "sub2"]),
            (
                Query([QueryItem(types=("CourseDefined",), tags=("course:2",)), QueryItem(types=("StudentRenamed",))]),
                ["def2", "rename"],
            ),
            (Query([QueryItem(tags=("nobody",))]), []),
            (Query([QueryItem(types=("Nothing",))]), []),
            (Query([QueryItem(tags=("term:2026", "course:1"))]), []),
        ]
        for q, labels in cases:
            assert self._labels(log, await query(store, q)) == labels, q

    @requires("read_query")
    async def test_each_event_once_in_position_order(self, store: EventStore) -> None:
        log = await self._courses(store)
        overlapping = Query(
            [
                QueryItem(tags=("student:1",)),
                QueryItem(types=("StudentSubscribed",)),
                QueryItem(types=("StudentSubscribed",), tags=("course:1",)),
                QueryItem(tags=("course:2",)),
            ]
        )
        found = await query(store, overlapping)
        assert self._labels(log, found) == ["def2", "reg", "sub1", "sub2"]
        assert [e.position for e in found] == sorted(e.position for e in found)

    @requires("read_query")
    async def test_query_all_and_empty_query(self, store: EventStore) -> None:
        await self._courses(store)
        everything = await collect(store.read_all())
        assert await query(store, Query.all()) == everything
        assert await query(store, Query([QueryItem(), QueryItem(tags=("course:1",))])) == everything
        assert await query(store, Query([])) == []
        assert await query(store, Query.all(), limit=2) == everything[:2]
        assert await query(store, Query.all(), after=everything[3].position) == everything[4:]

    @requires("read_query")
    async def test_read_query_records_are_whole(self, store: EventStore) -> None:
        event = NewEvent("Registered", b"\x00\xff data", b'{"who": "Zo\xc3\xab"}', tags=("user:1",))
        result = await store.append("users-1", [*new_events(2), event])
        [found] = await query(store, Query([QueryItem(tags=("user:1",))]))
        assert found == (await collect(store.read_stream("users-1")))[2]
        assert (found.stream, found.version, found.position, found.id) == ("users-1", 2, result.position, event.id)
        assert (found.type, found.data, found.metadata, found.tags) == (
            event.type,
            event.data,
            event.metadata,
            event.tags,
        )

    @requires("read_query")
    async def test_read_query_after_and_limit(self, store: EventStore) -> None:
        log = await self._courses(store)
        q = Query([QueryItem(tags=("student:1",)), QueryItem(types=("CourseDefined",))])
        positions = dict(log)
        assert self._labels(log, await query(store, q, after=positions["def2"])) == ["reg", "sub1", "sub2"]
        assert self._labels(log, await query(store, q, after=positions["reg"] - 1, limit=2)) == ["reg", "sub1"]
        assert self._labels(log, await query(store, q, limit=1)) == ["def1"]
        assert await query(store, q, limit=0) == []
        assert await query(store, q, after=positions["rename"]) == []

    @requires("read_query")
    async def test_read_query_pages_through_many_events(self, store: EventStore) -> None:
        batch = [tagged("T", "hot", n=i) if i % 3 else tagged("T", "cold", n=i) for i in range(2500)]
        await store.append("s-1", batch)
        hot = await query(store, Query([QueryItem(tags=("hot",))]))
        assert [e.version for e in hot] == [i for i in range(2500) if i % 3]
        assert [e.version for e in await query(store, Query([QueryItem(tags=("hot",))]), limit=1200)] == [
            i for i in range(2500) if i % 3
        ][:1200]

    @requires("read_query")
    async def test_read_query_huge_after_and_limit(self, store: EventStore) -> None:
        await self._courses(store)
        everything = await collect(store.read_all())
        q = Query([QueryItem(tags=("course:1",)), QueryItem(tags=("student:1",))])
        matching = await query(store, q)
        assert len(matching) == 4
        for number in HUGE_INTS:
            if number < 0:
                for kwargs in ({"after": number}, {"limit": number}):
                    with pytest.raises(InvalidVersion) as info:
                        await collect(store.read_query(q, **kwargs))
                    assert info.value.stream == "$query", number
                continue
            past = [e for e in matching if e.position > number]  # positions are the store's own
            assert await query(store, q, after=number) == past, number
            assert await query(store, q, after=number, limit=number) == past, number
            assert await query(store, q, limit=number) == matching, number
            assert await query(store, Query.all(), after=number) == [e for e in everything if e.position > number]

    @pytest.mark.parametrize(
        ("kwargs", "requested"),
        [
            ({"after": -1}, -1),
            ({"after": None}, None),
            ({"after": True}, True),
            ({"after": "1"}, "1"),
            ({"after": 1.0}, 1.0),
            ({"limit": -1}, "limit=-1"),
            ({"limit": False}, "limit=False"),
            ({"limit": "2"}, "limit='2'"),
        ],
    )
    async def test_read_query_bad_bounds(self, store: EventStore, kwargs: dict[str, Any], requested: object) -> None:
        with pytest.raises(InvalidVersion) as info:
            await collect(store.read_query(Query.all(), **kwargs))
        assert (info.value.stream, info.value.requested, info.value.actual) == ("$query", requested, None)
        assert str(info.value) == f"$query: invalid version {requested!r}"

    @pytest.mark.parametrize("bad", [None, "tags", QueryItem(tags=("a",)), [QueryItem()], {"tags": ["a"]}])
    async def test_read_query_takes_a_query(self, store: EventStore, bad: Any) -> None:
        with pytest.raises(InvalidQuery) as info:
            await collect(store.read_query(bad))
        assert str(info.value) == f"read_query takes a Query, not {type(bad).__name__}"

    @requires("read_query")
    async def test_read_query_sees_soft_deleted_streams(self, store: EventStore) -> None:
        first = await store.append("users-1", [tagged("Registered", "user:1"), tagged("Renamed", "user:1")])
        await store.delete_stream("users-1")
        again = await store.append("users-1", [tagged("Registered", "user:1")])
        found = await query(store, Query([QueryItem(tags=("user:1",))]))
        assert [(e.version, e.position) for e in found] == [
            (0, first.positions[0]),
            (1, first.positions[1]),
            (2, again.position),
        ]
