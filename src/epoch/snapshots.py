"""Snapshots of a stream's state for :class:`~epoch.commands.CommandHandler`: when one is written, and how.

``Snapshots(every=100, version=1)`` makes a handler write the state after an append that takes the
stream's version across a multiple of ``every`` (``new_version // every > old_version // every``, a new
stream's old version counting as 0), and start loading from the newest usable snapshot. ``every`` may be
a callable ``(old_version, new_version, state) -> bool`` instead (``old_version`` is ``None`` for a new
stream). ``version`` is the schema of the state: bump it when the state's shape or meaning changes, and
the snapshots of other versions are ignored.

A snapshot only ever saves time: writing is best effort (a failure is logged on the ``epoch.snapshots``
logger, never raised), a snapshot that cannot be decoded is skipped (logged), and a store without the
:class:`~epoch.stores.SupportsSnapshots` capability simply folds every event, as without snapshots.
States are encoded as JSON by msgspec: dataclasses, ``msgspec.Struct``s, pydantic models (also nested),
and builtin values; a state that would not decode back to an equal value is not written (as the codec
refuses such events, guarantee 12).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from epoch.cache import CachedState
from epoch.domain import DeciderLike, initial_state_of
from epoch.errors import ConfigurationError
from epoch.records import AppendResult
from epoch.stores import SupportsSnapshots, snapshot_store

__all__ = ["SnapshotPolicy", "Snapshots", "Snapshotter", "StateCodec"]

S = TypeVar("S")

logger = logging.getLogger("epoch.snapshots")

SnapshotPolicy = Callable[[int | None, int, Any], bool]
"""``(old_version, new_version, state) -> bool``: write a snapshot of ``state`` after this append?"""

_MAX_SCHEMA = 2**63 - 1  # stored in a 64-bit column


def _positive(name: str, value: object, largest: int = _MAX_SCHEMA) -> int:
    if type(value) is not int or not 1 <= value <= largest:
        raise ConfigurationError(f"Snapshots({name}=...) must be an int from 1 to {largest}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Snapshots:
    """When a :class:`~epoch.commands.CommandHandler` writes snapshots, and which ones it reads.

    ``every``: an int N (a snapshot when an append crosses a multiple of N) or a callable
    ``(old_version, new_version, state) -> bool``. ``version``: the state's schema version; snapshots of
    another version are ignored. ``keep``: how many snapshots per stream the store keeps (the newest
    ones; ``state_at`` of older versions folds from the newest kept one at or below them, or from the
    start). ``state_type``: the type to decode states as (default: the type of the decider's initial
    state; give it when that is ``None`` or a container of classes, e.g. ``dict[str, Account]``).
    Raises :class:`~epoch.errors.ConfigurationError` for a value out of range.
    """

    every: int | SnapshotPolicy = 100
    version: int = 1
    keep: int = 3
    state_type: Any = None

    def __post_init__(self) -> None:
        if not callable(self.every):
            _positive("every", self.every)
        _positive("version", self.version)
        _positive("keep", self.keep, 1000)

    def due(self, old_version: int | None, new_version: int, state: object) -> bool:
        """Whether an append from ``old_version`` (``None``: a new stream) to ``new_version`` writes a snapshot."""
        if callable(self.every):
            return bool(self.every(old_version, new_version, state))
        old = 0 if old_version is None else old_version
        return new_version // self.every > old // self.every


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic, not imported
    if dump is not None:
        return dump(mode="json", by_alias=True)
    raise NotImplementedError(f"cannot encode a {type(value).__qualname__}")


def _dec_hook(kind: Any, value: Any) -> Any:
    validate = getattr(kind, "model_validate", None)
    if validate is not None:
        return validate(value)
    raise NotImplementedError(f"cannot decode a {getattr(kind, '__qualname__', kind)}")


class StateCodec(Generic[S]):
    """States of one type to JSON bytes and back (msgspec; pydantic models through their own dump/validate)."""

    def __init__(self, state_type: Any) -> None:
        self.state_type = state_type
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        try:
            self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(state_type, dec_hook=_dec_hook)
        except TypeError as exc:
            raise ConfigurationError(f"Snapshots cannot decode states of type {state_type!r}: {exc}") from exc

    def encode(self, state: S) -> bytes:
        """The state's bytes; raises ``ValueError`` naming why when they would not decode back to an equal state."""
        try:
            data = self._encoder.encode(state)
        except (TypeError, NotImplementedError, OverflowError) as exc:
            raise ValueError(f"the state cannot be encoded: {exc}") from exc
        try:
            same = self.decode(data) == state
        except ValueError as exc:
            raise ValueError(f"the encoded state does not decode back: {exc}") from exc
        if not same:
            raise ValueError("the encoded state decodes to a different value")
        return data

    def decode(self, data: bytes) -> S:
        """The state stored as ``data``; raises ``ValueError`` for bytes that are not such a state."""
        try:
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except Exception as exc:  # msgspec's, pydantic's or a user's __post_init__: all mean "not this state"
            raise ValueError(str(exc) or type(exc).__name__) from exc


class Snapshotter(Generic[S]):
    """A handler's side of snapshots: the newest usable one when loading, and one after a crossing append."""

    def __init__(self, store: SupportsSnapshots, policy: Snapshots, initial_state: S) -> None:
        self.store = store
        self.policy = policy
        state_type = policy.state_type
        if state_type is None:
            if initial_state is None:
                raise ConfigurationError("Snapshots(state_type=...) is needed when the initial state is None")
            state_type = type(initial_state)
        self.codec: StateCodec[S] = StateCodec(state_type)

    @classmethod
    def of(cls, store: object, policy: Snapshots | None, decider: DeciderLike[Any, S, Any]) -> Snapshotter[S] | None:
        """The snapshotter for ``store``, or ``None`` without a policy or when the store keeps no snapshots."""
        if policy is None:
            return None
        if not isinstance(policy, Snapshots):
            raise ConfigurationError(f"snapshots must be a Snapshots(...) policy, not {policy!r}")
        capable = snapshot_store(store)
        if capable is None:
            logger.info("%s keeps no snapshots: every load folds the whole stream", type(store).__qualname__)
            return None
        return cls(capable, policy, initial_state_of(decider))

    async def newest(self, stream: str, at_most: int | None = None) -> CachedState[S] | None:
        """The state of the newest usable snapshot (at or below version ``at_most``), or ``None``.

        Usable: of this schema version, and taken while the stream looked as it does now (the store
        checks that nothing was deleted or truncated since). A snapshot that does not decode is skipped.
        """
        found = await self.store.load_snapshot(stream, self.policy.version, at_most)
        if found is None:
            return None
        try:
            state = self.codec.decode(found.data)
        except ValueError as exc:
            logger.warning("%s: snapshot at version %d ignored: it does not decode (%s)", stream, found.version, exc)
            return None
        return CachedState(state, found.version, found.position, found.first_visible)

    async def after_append(
        self, stream: str, base: CachedState[S], appended: AppendResult, written: int, state: S
    ) -> None:
        """Write a snapshot of ``state``, the state after the ``written`` events of ``appended``, an append
        guarded by exactly ``base``'s version (``None``: no stream), when the policy says so; never raises.

        The snapshot records the first visible version ``base`` was folded from (its first new event for a
        new stream), and the store saves it only while that is still the stream's: a delete or a
        truncation between the fold and the save never leaves a snapshot of hidden events (DESIGN §8).
        """
        version = appended.version
        if version is None:
            return
        old_version = base.version
        basis = version - written + 1 if old_version is None else base.first_version
        try:
            if not self.policy.due(old_version, version, state):
                return
            data = self.codec.encode(state)
            await self.store.save_snapshot(stream, version, self.policy.version, data, self.policy.keep, basis)
        except Exception as exc:  # best effort: a snapshot only saves time, a command never fails for one
            logger.warning("%s: snapshot at version %d not written (%s: %s)", stream, version, type(exc).__name__, exc)
