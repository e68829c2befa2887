"""The one domain every side runs: bank accounts with ~200-byte JSON deposit events.

epoch gets a pure decider over frozen dataclasses; ``eventsourcing`` gets the equivalent
``Aggregate`` written the way its documentation writes them; the raw side folds plain dicts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from epoch import Codec, Decider

NOTE = "deposit for the benchmark workload; " * 4  # with the other fields: ~200 bytes of JSON per event


@dataclass(frozen=True, slots=True)
class Opened:
    owner: str


@dataclass(frozen=True, slots=True)
class Deposited:
    amount: int
    reference: str
    note: str


AccountEvent = Opened | Deposited


@dataclass(frozen=True, slots=True)
class Deposit:
    amount: int
    reference: str
    note: str = NOTE


@dataclass(frozen=True, slots=True)
class Account:
    balance: int = 0
    deposits: int = 0


def decide(command: Deposit, state: Account) -> list[AccountEvent]:
    return [Deposited(command.amount, command.reference, command.note)]


def evolve(state: Account, event: AccountEvent) -> Account:
    if type(event) is Deposited:
        return Account(state.balance + event.amount, state.deposits + 1)
    return state


decider: Decider[Deposit, Account, AccountEvent] = Decider(decide=decide, evolve=evolve, initial_state=Account())
codec: Codec[AccountEvent] = Codec([Opened, Deposited])


def deposit_event(index: int) -> Deposited:
    return Deposited(index % 100 + 1, f"ref-{index:08d}", NOTE)


def deposit_dict(index: int) -> dict[str, Any]:
    return {"amount": index % 100 + 1, "reference": f"ref-{index:08d}", "note": NOTE}


def raw_metadata() -> bytes:
    """The raw sides' metadata: the same correlation ids epoch writes, encoded with the standard library."""
    correlation = str(uuid.uuid4())
    return json.dumps({"$correlation_id": correlation, "$causation_id": correlation}).encode()


def raw_event(version: int, index: int) -> tuple[str, bytes]:
    """The raw sides' ``(type, data)`` of an account's event at ``version``: Opened first, then deposits."""
    if version == 0:
        return "Opened", json.dumps({"owner": "owner"}).encode()
    return "Deposited", json.dumps(deposit_dict(index)).encode()


def raw_evolve(state: tuple[int, int], type_name: str, data: dict[str, Any]) -> tuple[int, int]:
    """The raw side's fold: the same arithmetic over ``json.loads`` dicts."""
    if type_name == "Deposited":
        return state[0] + data["amount"], state[1] + 1
    return state
