"""Events per minute over the last minutes of the log, drawn as an inline SVG bar chart.

The store protocol reads ``$all`` forwards only, so the window's first event is found by searching on
positions: ``read_all(after=p, limit=1)`` is one indexed seek that tells the time of the first event after
``p``. Stepping back from the head by doubling strides, then bisecting, finds the first position of the
window in about ``2 * log2(distance in positions)`` such seeks: where positions are dense (memory, SQLite)
that is ``2 * log2(events after the window's start)``, on PostgreSQL (sparse 64-bit positions,
``xid << 32 | ordinal``) at most about 130. A quiet window costs one seek (the newest event). Then only the
window's events are read, at most ``MAX_WINDOW_EVENTS`` of them.
This assumes ``recorded_at`` grows with the position, which holds up to the commit-time jitter of
concurrent writers (a few milliseconds on PostgreSQL): an event that close to the window's start may be
counted or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from epoch import EventStore

__all__ = ["Activity", "Bar", "MAX_WINDOW_EVENTS", "activity", "chart_svg", "window_start"]

MAX_WINDOW_EVENTS = 200_000
FIRST_STRIDE = 64


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    count: int


@dataclass(frozen=True, slots=True)
class Activity:
    """Counts per minute from ``bars[0].start`` to ``end``; ``seeks`` is how many one-event reads found the
    window, ``read`` how many events were read; ``truncated`` when the window held more than the cap."""

    bars: list[Bar]
    end: datetime
    seeks: int
    read: int
    truncated: bool

    @property
    def total(self) -> int:
        return sum(bar.count for bar in self.bars)


async def window_start(store: EventStore, since: datetime) -> tuple[int, int]:
    """The ``after`` from which ``read_all`` yields the events recorded at or after ``since``, and the
    number of seeks it took."""
    seeks = 0

    async def first_time_after(position: int) -> datetime | None:
        nonlocal seeks
        seeks += 1
        async for event in store.read_all(after=position, limit=1):
            return event.recorded_at
        return None

    def inside(when: datetime | None) -> bool:
        return when is None or when >= since

    head = await store.head_position()
    if head == 0 or not inside(await first_time_after(head - 1)):  # the newest event, or none
        return head, seeks  # a quiet window: one seek
    high = head  # the first event after ``high`` (none) is inside the window
    stride = FIRST_STRIDE
    low = max(0, head - stride)
    while low > 0 and inside(await first_time_after(low)):
        high = low
        stride *= 2
        low = max(0, head - stride)
    if low == 0 and inside(await first_time_after(0)):
        return 0, seeks
    # Now the first event after ``low`` is before the window and the first after ``high`` is inside it.
    while high - low > 1:
        middle = (low + high) // 2
        if inside(await first_time_after(middle)):
            high = middle
        else:
            low = middle
    return high, seeks


def minute_floor(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


async def activity(store: EventStore, now: datetime, minutes: int, category: str | None = None) -> Activity:
    """Events per minute for the ``minutes`` whole minutes up to the one holding ``now`` (aware)."""
    end = minute_floor(now) + timedelta(minutes=1)
    since = end - timedelta(minutes=minutes)
    after, seeks = await window_start(store, since)
    counts = [0] * minutes
    read = 0
    truncated = False
    async for event in store.read_all(after=after, categories=None if category is None else [category]):
        if read == MAX_WINDOW_EVENTS:
            truncated = True
            break
        read += 1
        slot = int((event.recorded_at - since) // timedelta(minutes=1))
        if slot >= 0:
            # A clock a little ahead of this one (the database's) puts an event past ``end``: the last bar.
            counts[min(slot, minutes - 1)] += 1
    bars = [Bar(since + timedelta(minutes=i), n) for i, n in enumerate(counts)]
    return Activity(bars, end, seeks, read, truncated)


# -- the chart --------------------------------------------------------------------------------------

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... that is >= ``value`` (the y axis' top)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def chart_svg(data: Activity, label_every: int = 10) -> str:
    """The bars as an SVG document fragment: one ``rect`` per minute (its count in a ``title``), the y axis
    at 0, half and the top, and the time (UTC, HH:MM) under every ``label_every``-th minute."""
    bars = data.bars
    top = nice_ceiling(max((bar.count for bar in bars), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(bars))
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="events per minute">'
    ]
    for value in sorted({0, top // 2, top}):
        y = TOP + plot_h - plot_h * value / top
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    for i, bar in enumerate(bars):
        h = plot_h * bar.count / top
        x = LEFT + i * slot
        when = bar.start.strftime("%H:%M")
        out.append(
            f'<rect class="bar" data-count="{bar.count}" x="{x + 1:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{max(1.0, slot - 2):.1f}" height="{h:.1f}"><title>{when}: {bar.count}</title></rect>'
        )
        if i % label_every == 0:
            out.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="start">{when}</text>')
    out.append(
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end">UTC, one bar a minute</text>'
        "</svg>"
    )
    return "".join(out)
