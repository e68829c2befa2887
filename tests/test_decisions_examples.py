"""The DCB examples: unique user names across per-user streams, and course subscriptions with two
constraints. Their deciders as specifications (DeciderSpec, unchanged), then their rules under real
concurrency: tasks on every store (tests/dcb_stores.py), OS processes on the SQL stores."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from epoch import AppendConditionFailed, EventStore, Query, QueryItem, open_store
from epoch.examples.courses import (
    MAX_COURSES,
    CourseDefined,
    CourseError,
    CourseExists,
    CourseFull,
    DefineCourse,
    Enrolment,
    StudentSubscribed,
    SubscribeStudent,
    TooManyCourses,
    UnknownCourse,
    courses,
    subscriptions_handler,
)
from epoch.examples.users.domain import DuplicateName, UnknownUser
from epoch.examples.users.unique_names import (
    AlreadyRegistered,
    Names,
    RegisterUser,
    RenameUser,
    UserRegistered,
    UserRenamed,
    names,
    names_handler,
)
from epoch.testing import DeciderSpec
from tests.dcb_stores import DCB_BACKENDS, SQL_DCB_BACKENDS, dcb_url, interleaved

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=DCB_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dcb_url(request, tmp_path)


@pytest.fixture(params=SQL_DCB_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dcb_url(request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[EventStore]:
    async with open_store(url) as opened:
        yield opened


async def outcome(call: Any) -> Any:
    """The result, or the error a command was refused with."""
    try:
        return await call
    except (CourseError, DuplicateName, AppendConditionFailed) as exc:
        return exc


# -- the deciders as specifications (DeciderSpec works for a decision's decider unchanged) -------


def test_names_spec() -> None:
    spec = DeciderSpec(names)
    spec.when(RegisterUser("1", "ada")).then([UserRegistered("1", "ada")])
    ada = spec.given([UserRegistered("1", "ada")])
    assert str(ada.when(RegisterUser("2", "ada")).then_raises(DuplicateName)) == "a user named 'ada' already exists"
    ada.when(RegisterUser("1", "ada")).then_nothing()
    assert str(ada.when(RegisterUser("1", "bob")).then_raises(AlreadyRegistered)) == (
        "user '1' is already registered as 'ada'"
    )
    ada.when(RenameUser("1", "bob")).then([UserRenamed("1", "ada", "bob")])
    ada.when(RenameUser("1", "ada")).then_nothing()
    spec.when(RenameUser("9", "bob")).then_raises(UnknownUser)
    renamed = ada.given([UserRenamed("1", "ada", "bob")])
    renamed.when(RegisterUser("2", "ada")).then([UserRegistered("2", "ada")])  # the old name is free again
    renamed.when(RenameUser("1", "ada")).then([UserRenamed("1", "bob", "ada")])
    renamed.given([UserRegistered("2", "ada")]).when(RenameUser("1", "ada")).then_raises(DuplicateName)
    renamed.when(RegisterUser("2", "ada")).then_state(Names({"bob": "1", "ada": "2"}, {"1": "bob", "2": "ada"}))


def test_courses_spec() -> None:
    spec = DeciderSpec(courses)
    spec.when(DefineCourse("math", 2)).then([CourseDefined("math", 2)])
    assert str(spec.when(DefineCourse("math", 0)).then_raises(CourseError)) == (
        "course 'math': capacity must be an int >= 1, not 0"
    )
    math = spec.given([CourseDefined("math", 2)])
    math.when(DefineCourse("math", 3)).then_raises(CourseExists)
    spec.when(SubscribeStudent("math", "s1")).then_raises(UnknownCourse)
    math.when(SubscribeStudent("math", "s1")).then([StudentSubscribed("math", "s1")])
    one = math.given([StudentSubscribed("math", "s1")])
    one.when(SubscribeStudent("math", "s1")).then_nothing()
    full = one.given([StudentSubscribed("math", "s2")])
    assert str(full.when(SubscribeStudent("math", "s3")).then_raises(CourseFull)) == (
        "course 'math' is full (2 students)"
    )
    busy = math.given([StudentSubscribed(f"c{i}", "s1") for i in range(MAX_COURSES)])
    assert str(busy.when(SubscribeStudent("math", "s1")).then_raises(TooManyCourses)) == (
        "student 's1' already takes 3 courses"
    )
    math.when(SubscribeStudent("math", "s1")).then_state(
        Enrolment({"math": 2}, {"math": frozenset({"s1"})}, {"s1": frozenset({"math"})})
    )


# -- unique names across per-user streams --------------------------------------------------------


async def holders(store: EventStore, name: str) -> list[tuple[str, str]]:
    """(stream, type) of every event that mentions ``name``."""
    query = Query([QueryItem(tags=(f"username:{name}",))])
    return [(r.stream, r.type) async for r in store.read_query(query)]


async def test_sixteen_concurrent_registrations_of_one_name_one_wins(store: EventStore) -> None:
    handler = names_handler(interleaved(store))
    outcomes = await asyncio.gather(*(outcome(handler.execute(RegisterUser(f"u{i}", "ada"))) for i in range(16)))
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1
    assert all(isinstance(o, DuplicateName) and o.name == "ada" for o in outcomes if o not in winners)
    (won,) = winners
    assert await holders(store, "ada") == [(won.stream, "UserRegistered")]
    assert [r.stream async for r in store.read_all()] == [won.stream]  # every loser stored nothing


async def test_the_losers_of_a_race_fail_the_condition_when_they_may_not_retry(store: EventStore) -> None:
    handler = names_handler(interleaved(store), retries=0)
    outcomes = await asyncio.gather(*(outcome(handler.execute(RegisterUser(f"u{i}", "ada"))) for i in range(16)))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 15
    assert all(isinstance(o, AppendConditionFailed | DuplicateName) for o in refused)
    if type(store).__name__ == "MemoryEventStore":  # every decision read before any appended
        assert all(isinstance(o, AppendConditionFailed) and o.after is None for o in refused)


async def test_renames_keep_names_unique_and_free_the_old_name(store: EventStore) -> None:
    handler = names_handler(store)
    await handler.execute(RegisterUser("1", "ada"))
    await handler.execute(RegisterUser("2", "bob"))
    with pytest.raises(DuplicateName):
        await handler.execute(RenameUser("2", "ada"))
    renamed = await handler.execute(RenameUser("1", "lovelace"))
    assert renamed.state == Names({"lovelace": "1"}, {"1": "lovelace"})
    taken = await handler.execute(RegisterUser("3", "ada"))
    assert (taken.stream, taken.version) == ("user-3", 0)
    assert await holders(store, "ada") == [
        ("user-1", "UserRegistered"),
        ("user-1", "UserRenamed"),
        ("user-3", "UserRegistered"),
    ]
    racing = names_handler(interleaved(store))
    outcomes = await asyncio.gather(*(outcome(racing.execute(RenameUser(u, "grace"))) for u in ("1", "2", "3")))
    assert sorted(type(o).__name__ for o in outcomes) == ["DuplicateName", "DuplicateName", "ExecuteResult"]
    assert len(await holders(store, "grace")) == 1


@pytest.mark.slow
async def test_processes_registering_one_name_one_wins(sql_url: str) -> None:
    async with open_store(sql_url) as store:
        assert await holders(store, "ada") == []  # (raises NotSupported where DCB is not merged yet)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.decision_workers", sql_url, str(worker), "4", "ada"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(4)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=240) for w in workers))
    counts = {"won": 0, "duplicate": 0}
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        for key, value in json.loads(out).items():
            counts[key] += value
    assert counts == {"won": 1, "duplicate": 15}
    async with open_store(sql_url) as store:
        assert [kind for _, kind in await holders(store, "ada")] == ["UserRegistered"]


# -- course subscriptions: capacity and the student's limit ----------------------------------------


@pytest.mark.parametrize("read_stream", [False, True], ids=["query", "query+stream"])
async def test_a_course_never_takes_more_students_than_its_capacity(store: EventStore, read_stream: bool) -> None:
    handler = subscriptions_handler(interleaved(store), read_stream=read_stream)
    await handler.execute(DefineCourse("math", 5))
    outcomes = await asyncio.gather(*(outcome(handler.execute(SubscribeStudent("math", f"s{i}"))) for i in range(16)))
    assert sum(not isinstance(o, Exception) for o in outcomes) == 5
    assert all(isinstance(o, CourseFull) and o.capacity == 5 for o in outcomes if isinstance(o, Exception))
    subscribed = [r.stream async for r in store.read_all() if r.type == "StudentSubscribed"]
    assert len(subscribed) == len(set(subscribed)) == 5


@pytest.mark.parametrize("read_stream", [False, True], ids=["query", "query+stream"])
async def test_a_student_never_takes_more_than_the_limit(store: EventStore, read_stream: bool) -> None:
    handler = subscriptions_handler(interleaved(store), read_stream=read_stream)
    for course in range(10):
        await handler.execute(DefineCourse(f"c{course}", 10))
    outcomes = await asyncio.gather(
        *(outcome(handler.execute(SubscribeStudent(f"c{course}", "s1"))) for course in range(10))
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == MAX_COURSES
    assert all(isinstance(o, TooManyCourses) for o in outcomes if isinstance(o, Exception))
    assert [r.version async for r in store.read_stream("student-s1")] == list(range(MAX_COURSES))


async def test_subscribing_twice_is_nothing_to_do(store: EventStore) -> None:
    handler = subscriptions_handler(store)
    await handler.execute(DefineCourse("art", 1))
    first = await handler.execute(SubscribeStudent("art", "s1"))
    again = await handler.execute(SubscribeStudent("art", "s1"))
    assert (again.events, again.stream, again.version, again.position) == ([], "student-s1", 0, first.position)
    with pytest.raises(CourseFull):
        await handler.execute(SubscribeStudent("art", "s2"))
    with pytest.raises(UnknownCourse):
        await handler.execute(SubscribeStudent("history", "s1"))
    with pytest.raises(CourseExists):
        await subscriptions_handler(store, read_stream=True).execute(DefineCourse("art", 3))
