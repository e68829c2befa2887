"""The pure domain: deciders, their combinators, views and sagas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from epoch import Decider, DeciderLike, Saga, View
from epoch.domain import decide_events, fold, initial_state_of, is_terminal_state
from tests.bank import (
    Account,
    AccountCommand,
    AccountError,
    AccountEvent,
    Clock,
    Close,
    Closed,
    Deposit,
    Deposited,
    Increment,
    Incremented,
    Open,
    Opened,
    Stamped,
    Withdraw,
    Withdrawn,
    account,
    counter,
    decide_count,
    evolve_count,
)


def test_decide_and_evolve() -> None:
    history: list[AccountEvent] = [Opened("ada"), Deposited(10)]
    state = fold(account, initial_state_of(account), history)
    assert state == Account("ada", 10)
    assert decide_events(account, Withdraw(4), state) == [Withdrawn(4)]
    assert decide_events(account, Open("bob"), state) == []
    with pytest.raises(AccountError):
        decide_events(account, Withdraw(11), state)


def test_decide_events_runs_a_generator_to_completion() -> None:
    # A generator decide raises only when iterated: decide_events must surface it immediately.
    with pytest.raises(AccountError) as info:
        decide_events(account, Deposit(1), Account())
    assert str(info.value) == "not open"


@dataclass
class Tally:
    seen: list[int] = field(default_factory=list)


def test_a_decide_returning_none_decided_nothing() -> None:
    def shrug(command: Increment, state: int) -> list[Incremented]:
        return None  # type: ignore[return-value]

    assert decide_events(Decider(shrug, evolve_count, 0).map_event(Incremented, lambda e: e), Increment(), 0) == []


def test_initial_state_value_function_or_class() -> None:
    assert initial_state_of(Decider(decide_count, evolve_count, 7)) == 7
    assert initial_state_of(Decider(decide_count, evolve_count, lambda: 8)) == 8

    def add(state: Tally, event: Incremented) -> Tally:
        return Tally([*state.seen, event.by])

    tally: Decider[Increment, Tally, Incremented] = Decider(lambda c, s: [], add, Tally)
    first, second = initial_state_of(tally), initial_state_of(tally)
    assert first == Tally() and first is not second  # a class is called for every fresh state


def test_services_are_a_third_argument() -> None:
    def stamp(command: Increment, state: int, clock: Clock) -> list[Stamped]:
        return [Stamped(clock.today)]

    stamped = Decider(stamp, lambda s, e: s, 0)
    assert decide_events(stamped, Increment(), 0, Clock("2024-01-01")) == [Stamped("2024-01-01")]
    assert decide_events(counter, Increment(2), 0) == [Incremented(2)]  # no services: two arguments


def test_is_terminal_state() -> None:
    assert is_terminal_state(account, Account(closed=True))
    assert not is_terminal_state(account, Account())
    assert not is_terminal_state(Decider(decide_count, evolve_count, 0), 10**6)
    assert not is_terminal_state(object(), None)


class Ledger:
    """A decider in the style of the origin design's ``EventContext``: a class with methods."""

    initial_state = ()

    def decide(self, command: Deposit, state: tuple[int, ...]) -> list[Deposited]:
        return [Deposited(command.amount)]

    def evolve(self, state: tuple[int, ...], event: Deposited) -> tuple[int, ...]:
        return (*state, event.amount)


def test_a_class_works_like_a_decider() -> None:
    ledger: DeciderLike[Deposit, tuple[int, ...], Deposited] = Ledger()
    assert decide_events(ledger, Deposit(3), initial_state_of(ledger)) == [Deposited(3)]
    assert fold(ledger, (), [Deposited(1), Deposited(2)]) == (1, 2)
    assert not is_terminal_state(ledger, ())


both = account.combine(counter, commands=(AccountCommand, Increment), events=(AccountEvent, Incremented))


def test_combine_routes_by_type() -> None:
    state = initial_state_of(both)
    assert state == (Account(), 0)
    assert decide_events(both, Open("ada"), state) == [Opened("ada")]
    assert decide_events(both, Increment(5), state) == [Incremented(5)]
    history: list[AccountEvent | Incremented] = [Opened("ada"), Incremented(5), Deposited(2)]
    assert fold(both, state, history) == (Account("ada", 2), 5)


def test_combine_passes_services_to_both_sides() -> None:
    assert decide_events(both, Increment(5), (Account(), 0), Clock("today")) == [Incremented(5)]


def test_combine_rejects_foreign_commands_and_events() -> None:
    foreign: Any = "withdraw everything"
    with pytest.raises(TypeError) as info:
        decide_events(both, foreign, (Account(), 0))
    assert str(info.value) == "no combined decider handles the command 'withdraw everything'"
    with pytest.raises(TypeError) as info:
        fold(both, (Account(), 0), [foreign])
    assert str(info.value) == "no combined decider handles the event 'withdraw everything'"


def test_combine_sends_a_shared_type_to_both_sides() -> None:
    twice = counter.combine(counter, commands=(Increment, Increment), events=(Incremented, Incremented))
    assert decide_events(twice, Increment(1), (0, 0)) == [Incremented(1), Incremented(1)]
    assert fold(twice, (0, 0), [Incremented(2)]) == (2, 2)


def test_combine_is_terminal_when_both_sides_are() -> None:
    twice = counter.combine(counter, commands=(Increment, Increment), events=(Incremented, Incremented))
    assert is_terminal_state(twice, (100, 100))
    assert not is_terminal_state(twice, (100, 0))
    assert is_terminal_state(both, (Account(closed=True), 100))
    plain = Decider(decide_count, evolve_count, 0)
    assert counter.combine(plain, commands=(Increment, ()), events=(Incremented, ())).is_terminal is None


def test_map_command() -> None:
    by_amount = account.map_command(Deposit)
    assert decide_events(by_amount, 5, Account("ada")) == [Deposited(5)]
    assert by_amount.is_terminal is account.is_terminal
    stamped = counter.map_command(Increment)
    assert decide_events(stamped, 3, 0, Clock("today")) == [Incremented(3)]


def test_map_event() -> None:
    as_ints = counter.map_event(Incremented, lambda e: e.by)
    assert decide_events(as_ints, Increment(4), 0, Clock("today")) == [4]
    assert fold(as_ints, 0, [1, 2, 3]) == 6
    assert initial_state_of(as_ints) == 0


def test_map_state() -> None:
    as_text = counter.map_state(int, str)
    assert initial_state_of(as_text) == "0"
    assert fold(as_text, "1", [Incremented(2)]) == "3"
    assert decide_events(as_text, Increment(1), "5", Clock("today")) == [Incremented(1)]
    assert is_terminal_state(as_text, "100") and not is_terminal_state(as_text, "99")
    assert Decider(decide_count, evolve_count, 0).map_state(int, str).is_terminal is None


def test_view_folds_from_a_fresh_state() -> None:
    history: View[list[int], Incremented] = View(lambda s, e: [*s, e.by], list)
    assert history.fold([Incremented(1), Incremented(2)]) == [1, 2]
    assert history.fold([]) == []
    assert View(evolve_count, 10).fold([Incremented(1)]) == 11


def test_saga_reacts_and_combines() -> None:
    def refund(event: AccountEvent) -> Iterable[AccountCommand]:
        return [Withdraw(1)] if isinstance(event, Deposited) else []

    def close(event: AccountEvent) -> list[Close]:
        return [Close()] if isinstance(event, Withdrawn) and event.amount > 100 else []

    saga = Saga(refund).combine(Saga(close))
    assert list(saga.react(Deposited(5))) == [Withdraw(1)]
    assert list(saga.react(Withdrawn(500))) == [Close()]
    assert list(saga.react(Closed())) == []
