"""Tags through CommandHandler on every store: the codec's tags reach the store on every path, the cached
one included (on PostgreSQL a cached handler's append is the lifecycle-guarded statement)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from epoch import Codec, CommandHandler, Decider, Query, QueryItem, StateCache
from epoch.stores import EventStore
from epoch.testing import collect


@dataclass(frozen=True)
class Scored:
    event_tags: ClassVar[tuple[str, ...]] = ("player:{player}", "game")
    player: str
    points: int


@dataclass(frozen=True)
class Score:
    player: str
    points: int


def _decide(command: Score, total: int) -> list[Scored]:
    return [Scored(command.player, command.points)]


def _evolve(total: int, event: Scored) -> int:
    return total + event.points


scores: Decider[Score, int, Scored] = Decider(_decide, _evolve, 0)


async def test_tags_are_written_by_uncached_and_cached_commands(store: EventStore) -> None:
    cold = CommandHandler(store, scores, "score", Codec([Scored]))
    cached = CommandHandler(store, scores, "score", Codec([Scored]), cache=StateCache())
    first = await cold.execute("1", Score("ada", 3))
    await cached.load("1")  # warm: the next append is the cached (guarded) one
    second = await cached.execute("1", Score("ada", 4))
    third = await cached.execute("1", Score("bo", 5))
    assert (first.version, second.version, third.version) == (0, 1, 2)
    assert [e.tags for e in (*first.events, *second.events, *third.events)] == [
        ("player:ada", "game"),
        ("player:ada", "game"),
        ("player:bo", "game"),
    ]
    found = await collect(store.read_query(Query([QueryItem(tags=("player:ada",))])))
    assert [(e.stream, e.version, e.tags) for e in found] == [
        ("score-1", 0, ("player:ada", "game")),
        ("score-1", 1, ("player:ada", "game")),
    ]
    assert [e.version for e in await collect(store.read_query(Query([QueryItem(tags=("game",))])))] == [0, 1, 2]
    assert third.state == 12
