"""DeciderSpec: given/when/then specifications, and how they fail."""

from __future__ import annotations

import re

import pytest

from epoch import Decider, StreamClosed
from epoch.testing import DeciderSpec
from tests.bank import (
    Account,
    AccountError,
    Clock,
    Close,
    Closed,
    Deposit,
    Deposited,
    Increment,
    Incremented,
    InsufficientFunds,
    Open,
    Opened,
    Stamped,
    Withdraw,
    Withdrawn,
    account,
    counter,
)

spec = DeciderSpec(account)
opened = spec.given([Opened("ada")])


def test_then() -> None:
    spec.when(Open("ada")).then([Opened("ada")])
    opened.given([Deposited(5)]).when(Withdraw(5)).then([Withdrawn(5)])


def test_then_nothing() -> None:
    opened.when(Open("bob")).then_nothing()


def test_then_raises_matches_subclasses_and_returns_the_error() -> None:
    error = opened.when(Withdraw(1)).then_raises(AccountError)
    assert isinstance(error, InsufficientFunds)
    assert str(error) == "balance 0 < 1"


def test_given_state() -> None:
    spec.given_state(Account("ada", 10)).when(Withdraw(10)).then([Withdrawn(10)])
    spec.given_state(Account("ada", 10)).given([Withdrawn(4)]).when(Withdraw(7)).then_raises(InsufficientFunds)


def test_then_state() -> None:
    opened.when(Deposit(3)).then_state(Account("ada", 3))
    with pytest.raises(AssertionError, match=re.escape("wrong state\nexpected: Account(owner='ada', balance=4")):
        opened.when(Deposit(3)).then_state(Account("ada", 4))


def test_services_reach_decide() -> None:
    def stamp(command: Increment, state: int, clock: Clock) -> list[Stamped]:
        return [Stamped(clock.today)]

    DeciderSpec(Decider(stamp, lambda s, e: s, 0)).when(Increment(), Clock("monday")).then([Stamped("monday")])
    DeciderSpec(counter).when(Increment(2)).then([Incremented(2)])


def test_a_terminal_state_refuses_commands_like_the_handler() -> None:
    closed = opened.given([Closed()])
    error = closed.when(Deposit(1)).then_raises(StreamClosed)
    assert error.version == 1
    assert spec.given_state(Account(closed=True)).when(Close()).then_raises(StreamClosed).version is None


def test_wrong_events_show_expected_and_actual() -> None:
    with pytest.raises(AssertionError) as caught:
        opened.when(Deposit(5)).then([Deposited(6)])
    assert str(caught.value) == (
        "wrong events\nexpected:\n  [0] Deposited(amount=6)\nactual:\n  [0] Deposited(amount=5)"
    )
    with pytest.raises(AssertionError, match=re.escape("expected:\n  (no events)\nactual:\n  [0] Deposited")):
        opened.when(Deposit(5)).then_nothing()


def test_an_unexpected_error_fails_then() -> None:
    with pytest.raises(AssertionError, match="expected events, but InsufficientFunds was raised: balance 0 < 1"):
        opened.when(Withdraw(1)).then([])
    with pytest.raises(AssertionError, match="expected a state, but StreamClosed was raised"):
        opened.given([Closed()]).when(Deposit(1)).then_state(Account())


def test_then_raises_fails_on_another_error_or_none() -> None:
    with pytest.raises(AssertionError, match="expected StreamClosed, but InsufficientFunds was raised"):
        opened.when(Withdraw(1)).then_raises(StreamClosed)
    with pytest.raises(AssertionError, match=r"expected AccountError, but decide returned\n  \[0\] Deposited"):
        opened.when(Deposit(1)).then_raises(AccountError)


def test_an_evolve_that_cannot_take_the_new_events_fails() -> None:
    def evolve(state: int, event: Incremented) -> int:
        raise ValueError("cannot evolve")

    with pytest.raises(AssertionError, match="ValueError was raised: cannot evolve"):
        DeciderSpec(Decider(counter.decide, evolve, 0)).when(Increment()).then([Incremented(1)])


def test_when_is_required() -> None:
    with pytest.raises(AssertionError, match=r"call \.when\(command\)"):
        opened.then([])
    with pytest.raises(AssertionError, match=r"call \.when\(command\)"):
        opened.then_raises(AccountError)
