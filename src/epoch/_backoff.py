"""Jittered exponential backoff, written once for every retry loop in epoch.

A retry waits ``first * 2**attempt`` seconds capped at ``cap``, times a random factor in
``[0.5, 1.5)``: the doubling backs off from an overloaded server, and the jitter keeps writers that
failed together from retrying together (which would make them collide again).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Backoff", "delay"]


def delay(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    return min(cap, math.ldexp(first, min(attempt, 64))) * random.uniform(0.5, 1.5)


@dataclass(slots=True)
class Backoff:
    """The delays of one retry loop: ``next()`` gives the wait before each retry in turn."""

    first: float
    cap: float
    attempt: int = 0

    def next(self) -> float:
        wait = delay(self.attempt, self.first, self.cap)
        self.attempt += 1
        return wait

    def reset(self) -> None:
        """Start over from ``first`` (e.g. after a connection came back)."""
        self.attempt = 0
