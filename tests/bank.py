"""The small example domain the domain, codec and spec tests share: a bank account and a counter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from epoch import Decider


class AccountError(Exception):
    """A command the account refuses."""


class InsufficientFunds(AccountError):
    """A withdrawal larger than the balance."""


@dataclass(frozen=True, slots=True)
class Open:
    owner: str


@dataclass(frozen=True, slots=True)
class Deposit:
    amount: int


@dataclass(frozen=True, slots=True)
class Withdraw:
    amount: int


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Opened:
    owner: str


@dataclass(frozen=True, slots=True)
class Deposited:
    amount: int


@dataclass(frozen=True, slots=True)
class Withdrawn:
    amount: int


@dataclass(frozen=True, slots=True)
class Closed:
    pass


AccountCommand = Open | Deposit | Withdraw | Close
AccountEvent = Opened | Deposited | Withdrawn | Closed


@dataclass(frozen=True, slots=True)
class Account:
    owner: str | None = None
    balance: int = 0
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Clock:
    """Services: what ``decide`` may not do itself."""

    today: str


@dataclass(frozen=True, slots=True)
class Stamped:
    on: str


def decide(command: AccountCommand, state: Account) -> Iterator[AccountEvent]:
    match command:
        case Open(owner):
            if state.owner is None:
                yield Opened(owner)
        case Deposit(amount):
            if state.owner is None:
                raise AccountError("not open")
            yield Deposited(amount)
        case Withdraw(amount):
            if amount > state.balance:
                raise InsufficientFunds(f"balance {state.balance} < {amount}")
            yield Withdrawn(amount)
        case Close():
            yield Closed()


def evolve(state: Account, event: AccountEvent) -> Account:
    match event:
        case Opened(owner):
            return replace(state, owner=owner)
        case Deposited(amount):
            return replace(state, balance=state.balance + amount)
        case Withdrawn(amount):
            return replace(state, balance=state.balance - amount)
        case Closed():
            return replace(state, closed=True)


def is_closed(state: Account) -> bool:
    return state.closed


account: Decider[AccountCommand, Account, AccountEvent] = Decider(decide, evolve, Account(), is_closed)


@dataclass(frozen=True, slots=True)
class Increment:
    by: int = 1


@dataclass(frozen=True, slots=True)
class Incremented:
    by: int


def decide_count(command: Increment, state: int, clock: Clock | None = None) -> list[Incremented]:
    return [Incremented(command.by)]


def evolve_count(state: int, event: Incremented) -> int:
    return state + event.by


counter: Decider[Increment, int, Incremented] = Decider(decide_count, evolve_count, 0, lambda n: n >= 100)
