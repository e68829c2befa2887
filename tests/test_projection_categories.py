"""Projections pass their ``categories`` through the stores' normalisation (guarantee 11): a repeated
name delivers each event once, an empty filter delivers nothing and still lets the runner go idle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from epoch import Codec, EventEnvelope, EventStore, ProjectionRunner


@dataclass(frozen=True)
class Noted:
    n: int


class Counting:
    def __init__(self, name: str, categories: Any) -> None:
        self.name = name
        self.categories = categories
        self.seen: list[tuple[str, int]] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen.append((envelope.stream, envelope.version))


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        (["users", "users"], [("users-1", 0), ("users-1", 1), ("users-2", 0)]),
        (("users", "orders", "users"), [("users-1", 0), ("orders-1", 0), ("users-1", 1), ("users-2", 0)]),
        (["users"] * 9, [("users-1", 0), ("users-1", 1), ("users-2", 0)]),
        ([], []),
    ],
)
async def test_projection_categories(store: EventStore, categories: Any, expected: list[tuple[str, int]]) -> None:
    codec = Codec([Noted])
    for stream, n in (("users-1", 0), ("orders-1", 1), ("users-1", 2), ("users-2", 3), ("audit", 4)):
        await store.append(stream, [codec.encode(Noted(n))])
    projection = Counting("counting", categories)
    await ProjectionRunner(store, codec, [projection]).run_until_idle()
    assert projection.seen == expected
