"""Model-based test: random appends, replays, conflicts and deletes on each store, checked against a
plain-Python reference model after every step (hypothesis stateful testing)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from epoch import ANY, NO_STREAM, STREAM_EXISTS, DuplicateEventId, NewEvent, WrongExpectedVersion, open_store
from epoch.stores import EventStore
from tests.conftest import BACKENDS, create_database

STREAMS = ["a-1", "a-2", "b-1"]


class ModelStream:
    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self.first_visible = 0

    @property
    def version(self) -> int | None:
        last = len(self.events) - 1
        return last if last >= self.first_visible else None


def expected_from(choice: str, actual: int | None) -> Any:
    return {
        "any": ANY,
        "no_stream": NO_STREAM,
        "none": None,
        "exists": STREAM_EXISTS,
        "actual": NO_STREAM if actual is None else actual,
        "stale": 0 if actual is None else actual - 1 if actual > 0 else actual + 1,
        "ahead": (actual or 0) + 1,
    }[choice]


def satisfied(expected: Any, actual: int | None) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM or expected is None:
        return actual is None
    if expected is STREAM_EXISTS:
        return actual is not None
    return bool(actual == expected)


def make_machine(open_url: Callable[[], str]) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.store: EventStore = self.loop.run_until_complete(open_store(open_url()))
            self.streams = {name: ModelStream() for name in STREAMS}
            self.log: list[tuple[str, int, NewEvent]] = []
            self.last_batch: tuple[str, list[NewEvent], Any] | None = None

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        @rule(
            stream=st.sampled_from(STREAMS),
            count=st.integers(0, 3),
            choice=st.sampled_from(["any", "no_stream", "none", "exists", "actual", "stale", "ahead"]),
            payload=st.binary(max_size=20),
        )
        def append(self, stream: str, count: int, choice: str, payload: bytes) -> None:
            model = self.streams[stream]
            expected = expected_from(choice, model.version)
            batch = [NewEvent("T", payload, b'{"i": %d}' % i) for i in range(count)]
            if satisfied(expected, model.version):
                result = self.run(self.store.append(stream, batch, expected))
                for event in batch:
                    self.log.append((stream, len(model.events), event))
                    model.events.append(event)
                assert result.version == model.version
                assert len(result.positions) == count
                if batch:
                    self.last_batch = (stream, batch, expected)
            else:
                with pytest.raises(WrongExpectedVersion) as info:
                    self.run(self.store.append(stream, batch, expected))
                assert info.value.actual == model.version

        @rule()
        def replay_last_batch(self) -> None:
            if self.last_batch is None:
                return
            stream, batch, expected = self.last_batch
            head = self.run(self.store.head_position())
            model = self.streams[stream]
            before = model.version
            self.run(self.store.append(stream, batch, expected))
            assert self.run(self.store.stream_version(stream)) == before
            assert self.run(self.store.head_position()) == head

        @rule(stream=st.sampled_from(STREAMS), other=st.sampled_from(STREAMS))
        def duplicate_elsewhere(self, stream: str, other: str) -> None:
            model = self.streams[stream]
            if not model.events or other == stream:
                return
            head = self.run(self.store.head_position())
            with pytest.raises(DuplicateEventId):
                self.run(self.store.append(other, [model.events[-1]]))
            assert self.run(self.store.head_position()) == head

        @rule(stream=st.sampled_from(STREAMS), choice=st.sampled_from(["any", "actual", "stale"]))
        def delete(self, stream: str, choice: str) -> None:
            model = self.streams[stream]
            expected = expected_from(choice, model.version)
            if satisfied(expected, model.version):
                self.run(self.store.delete_stream(stream, expected))
                model.first_visible = len(model.events)
                self.last_batch = None
            else:
                with pytest.raises(WrongExpectedVersion):
                    self.run(self.store.delete_stream(stream, expected))

        @invariant()
        def streams_match(self) -> None:
            for name, model in self.streams.items():
                assert self.run(self.store.stream_version(name)) == model.version

                async def read(name: str = name) -> list[Any]:
                    return [e async for e in self.store.read_stream(name)]

                stored = self.run(read())
                visible = model.events[model.first_visible :]
                assert [e.id for e in stored] == [e.id for e in visible]
                assert [e.data for e in stored] == [e.data for e in visible]
                assert [e.version for e in stored] == list(range(model.first_visible, len(model.events)))

        @invariant()
        def log_matches(self) -> None:
            async def read() -> list[Any]:
                return [e async for e in self.store.read_all()]

            stored = self.run(read())
            assert [(e.stream, e.version, e.id) for e in stored] == [(s, v, e.id) for s, v, e in self.log]
            positions = [e.position for e in stored]
            assert positions == sorted(set(positions))
            assert self.run(self.store.head_position()) == (positions[-1] if positions else 0)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()

    return StoreMachine


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_matches_reference_model(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        open_url: Callable[[], str] = lambda: "memory://"  # noqa: E731
        examples = 60
    elif backend == "sqlite":
        root = tempfile.mkdtemp(prefix="epoch-model.")
        open_url = lambda: f"sqlite:///{root}/{uuid.uuid4().hex}.db"  # noqa: E731
        examples = 30
    else:
        server: str = request.getfixturevalue("pg_server_dsn")

        def open_url() -> str:
            return create_database(server)

        examples = 15
    run_state_machine_as_test(
        make_machine(open_url),
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
