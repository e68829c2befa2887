"""The ``eventsourcing`` side of the domain: the same account as an ``Aggregate``, written the way the
library's documentation writes them (declarative ``@event`` methods). Imported only when that side runs:
the library is a benchmark-only dependency.
"""

from __future__ import annotations

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class EsAccount(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0
        self.deposits = 0

    @event("Deposited")
    def deposit(self, amount: int, reference: str, note: str) -> None:
        self.balance += amount
        self.deposits += 1


class Bank(Application[object]):
    """A plain application: its repository, its recorder and its mapper, nothing overridden."""


class SnapshottingBank(Bank):
    """The same application with the library's snapshotting: one every 100 versions of an account."""

    snapshotting_intervals = {EsAccount: 100}  # noqa: RUF012 - the library's own class attribute
