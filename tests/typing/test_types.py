"""Pins the types mypy infers for the public generics; ``test_types_check`` runs mypy on this file.

The ``_check_*`` functions are never called: they exist to be type-checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import pytest

from epoch import (
    Codec,
    Decider,
    DeciderLike,
    DecisionHandler,
    EventCodec,
    EventEnvelope,
    EventStore,
    ExecuteResult,
    Query,
    RecordedEvent,
    Saga,
    View,
)
from epoch.domain import decide_events, fold, initial_state_of
from epoch.testing import DeciderSpec
from tests.bank import (
    Account,
    AccountCommand,
    AccountEvent,
    Clock,
    Close,
    Deposit,
    Deposited,
    Increment,
    Incremented,
    Stamped,
    account,
    decide,
    decide_count,
    evolve,
    evolve_count,
)


def _check_decider_inference() -> None:
    assert_type(Decider(decide, evolve, Account()), Decider[AccountCommand, Account, AccountEvent])
    assert_type(Decider(decide, evolve, Account), Decider[AccountCommand, Account, AccountEvent])
    assert_type(Decider(decide_count, evolve_count, lambda: 0), Decider[Increment, int, Incremented])

    def stamp(command: Increment, state: int, clock: Clock) -> list[Stamped]:
        return [Stamped(clock.today)]

    def ignore(state: int, event: Stamped) -> int:
        return state

    assert_type(Decider(stamp, ignore, 0), Decider[Increment, int, Stamped])


def _check_combinators(counter: Decider[Increment, int, Incremented]) -> None:
    both = account.combine(counter, commands=(AccountCommand, Increment), events=(AccountEvent, Incremented))
    assert_type(both, Decider[AccountCommand | Increment, tuple[Account, int], AccountEvent | Incremented])
    assert_type(account.map_command(Deposit), Decider[int, Account, AccountEvent])
    assert_type(counter.map_event(Incremented, lambda e: e.by), Decider[Increment, int, int])
    assert_type(counter.map_state(int, str), Decider[Increment, str, Incremented])


def _check_helpers(counter: Decider[Increment, int, Incremented], history: list[Incremented]) -> None:
    assert_type(initial_state_of(counter), int)
    assert_type(fold(counter, 0, history), int)
    assert_type(decide_events(counter, Increment(), 0), list[Incremented])
    assert_type(decide_events(account, Close(), Account(), Clock("today")), list[AccountEvent])


class Ledger:
    initial_state = 0

    def decide(self, command: Deposit, state: int) -> list[Deposited]:
        return [Deposited(command.amount)]

    def evolve(self, state: int, event: Deposited) -> int:
        return state + event.amount


def _check_decider_like() -> None:
    like: DeciderLike[Deposit, int, Deposited] = Ledger()
    also: DeciderLike[AccountCommand, Account, AccountEvent] = account
    assert_type(initial_state_of(Ledger()), int)
    assert_type(decide_events(Ledger(), Deposit(1), 0), list[Deposited])
    assert_type(DeciderSpec(Ledger()), DeciderSpec[Deposit, int, Deposited])
    assert_type(DeciderSpec(like), DeciderSpec[Deposit, int, Deposited])
    assert_type(DeciderSpec(also), DeciderSpec[AccountCommand, Account, AccountEvent])


def _check_view_and_saga(history: list[Incremented]) -> None:
    view = View(evolve_count, 0)
    assert_type(view, View[int, Incremented])
    assert_type(view.fold(history), int)

    def react(event: Incremented) -> list[Deposit]:
        return [Deposit(event.by)]

    def close(event: Incremented) -> list[Close]:
        return []

    assert_type(Saga(react), Saga[Incremented, Deposit])
    assert_type(Saga(react).combine(Saga(close)), Saga[Incremented, Deposit | Close])


def _check_codec(recorded: RecordedEvent) -> None:
    codec: Codec[AccountEvent] = Codec([Deposited])
    assert_type(codec.decode(recorded), EventEnvelope[AccountEvent])
    assert_type(codec.decode_data(recorded), AccountEvent)
    assert_type(Codec([Deposited]), Codec[Deposited])
    protocol: EventCodec[AccountEvent] = codec
    assert_type(protocol.decode_data(recorded), AccountEvent)


def _check_spec() -> None:
    assert_type(DeciderSpec(account), DeciderSpec[AccountCommand, Account, AccountEvent])
    assert_type(DeciderSpec(account).given([]).when(Close()), DeciderSpec[AccountCommand, Account, AccountEvent])


async def _check_decision_handler(store: EventStore, codec: Codec[AccountEvent]) -> None:
    def query(command: AccountCommand) -> Query:
        return Query.all()

    handler = DecisionHandler(store, account, codec, query=query, stream=lambda command: "account-1")
    assert_type(handler, DecisionHandler[AccountCommand, Account, AccountEvent])
    result = await handler.execute(Close())
    assert_type(result, ExecuteResult[Account, AccountEvent])
    assert_type(result.state, Account)
    assert_type(result.events, list[EventEnvelope[AccountEvent]])


def test_types_check(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    config = Path(__file__).parents[2] / "pyproject.toml"
    # A private cache: a shared one breaks when another mypy writes it at the same time.
    stdout, stderr, status = api.run(
        ["--config-file", str(config), "--cache-dir", str(tmp_path), "--no-error-summary", __file__]
    )
    assert status == 0, stdout + stderr
