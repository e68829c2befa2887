"""Snapshots of a stream's state for :class:`~epoch.commands.CommandHandler` and of a query's for
:class:`~epoch.decisions.DecisionHandler`: when one is written, and how.

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

For a ``DecisionHandler`` (:class:`QuerySnapshotter`), ``every`` counts the events a decision folds (those
its query matched, and with ``read_stream`` the stream's own): a snapshot of the state a decision was made
on is written after its append when that count crosses a multiple of ``every`` (``old_version`` is the
count of the snapshot the decision started from, ``None`` without one). A decision starts from its key's
snapshot and reads only the events after it. The key is a digest of the query (its items as sets), the
decider (``evolve``'s module and qualified name, or the handler's ``snapshot_key``, and the encoded initial
state: two deciders over one query never share a snapshot) and, with ``read_stream``, the stream. With
``read_stream`` the snapshot's data also holds the stream's first version it was folded from. ``keep``
does not apply: a key keeps its newest snapshot.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from epoch.cache import CachedState
from epoch.domain import DeciderLike, initial_state_of
from epoch.errors import ConfigurationError
from epoch.queries import Query
from epoch.records import AppendResult
from epoch.stores import SupportsQuerySnapshots, SupportsSnapshots, query_snapshot_store, snapshot_store

__all__ = ["QueryState", "QuerySnapshotter", "SnapshotPolicy", "Snapshots", "Snapshotter", "StateCodec"]

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


def _policy(policy: object) -> Snapshots:
    if not isinstance(policy, Snapshots):
        raise ConfigurationError(f"snapshots must be a Snapshots(...) policy, not {policy!r}")
    return policy


def _state_codec(policy: Snapshots, initial_state: Any) -> StateCodec[Any]:
    state_type = policy.state_type
    if state_type is None:
        if initial_state is None:
            raise ConfigurationError("Snapshots(state_type=...) is needed when the initial state is None")
        state_type = type(initial_state)
    return StateCodec(state_type)


class Snapshotter(Generic[S]):
    """A handler's side of snapshots: the newest usable one when loading, and one after a crossing append."""

    def __init__(self, store: SupportsSnapshots, policy: Snapshots, initial_state: S) -> None:
        self.store = store
        self.policy = policy
        self.codec: StateCodec[S] = _state_codec(policy, initial_state)

    @classmethod
    def of(cls, store: object, policy: Snapshots | None, decider: DeciderLike[Any, S, Any]) -> Snapshotter[S] | None:
        """The snapshotter for ``store``, or ``None`` without a policy or when the store keeps no snapshots."""
        if policy is None:
            return None
        policy = _policy(policy)
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
        version, first = found.version, found.first_visible  # as a store from elsewhere (or KurrentDB) gave them
        highest = version if at_most is None else at_most
        if type(version) is not int or type(first) is not int or not 0 <= first <= version <= highest:
            logger.warning(
                "%s: snapshot at version %r ignored: its versions do not fit (first %r)", stream, version, first
            )
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


def _items(query: Query) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """A query's items as sets: each item's types and tags sorted, the items de-duplicated and sorted."""
    return sorted({(tuple(sorted(item.types)), tuple(sorted(item.tags))) for item in query.items})


def _label(items: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> str:
    """What ``epoch snapshots queries`` shows of a query (its :func:`_items`)."""
    return " | ".join(
        " ".join([*(f"type:{name}" for name in types), *(f"tag:{tag}" for tag in tags)]) or "*" for types, tags in items
    )


@dataclass(frozen=True, slots=True)
class QueryState(Generic[S]):
    """A loaded query snapshot: ``state`` folds ``count`` events, those its query matched up to ``position``
    (and with ``read_stream`` the stream's own from version ``first`` up to ``version``; both ``None``: the
    stream had none)."""

    state: S
    position: int
    count: int
    version: int | None
    first: int | None = None


def _where(function: Any) -> str:
    return f"{getattr(function, '__module__', None)}.{getattr(function, '__qualname__', None)}"


def _unnamed(evolve: Any) -> str | None:
    """Why ``evolve`` has no name that is the same in every process (``None``: its module and qualified name are)."""
    if isinstance(evolve, functools.partial):
        return f"a functools.partial of {_where(evolve.func)}"
    if inspect.ismethod(evolve) and not isinstance(evolve.__self__, type):
        return f"a method bound to one instance ({_where(evolve)})"
    if not inspect.isroutine(evolve) or not isinstance(getattr(evolve, "__qualname__", None), str):
        return f"a callable object (a {_where(type(evolve))})"
    if evolve.__name__ == "<lambda>":
        return f"a lambda ({_where(evolve)})"
    if "<locals>" in evolve.__qualname__:
        return f"a function defined inside another one ({_where(evolve)})"
    return None


def _decider_name(decider: DeciderLike[Any, Any, Any], name: str | None) -> bytes:
    """What a query snapshot's key names of the decider: ``name`` (``snapshot_key``) or ``evolve``'s module
    and qualified name, with the encoded initial state; ``ConfigurationError`` when there is neither."""
    if name is not None:
        if type(name) is not str or not name:
            raise ConfigurationError(f"DecisionHandler(snapshot_key=...) must be a non-empty str, not {name!r}")
        named = ["snapshot_key", name]
    else:
        evolve = decider.evolve
        reason = _unnamed(evolve)
        if reason is not None:
            raise ConfigurationError(
                f"DecisionHandler: snapshots need a decider named the same in every process, and its evolve is"
                f" {reason}: give the handler snapshot_key='...', a stable name of the decider"
            )
        named = ["evolve", f"{evolve.__module__}.{evolve.__qualname__}"]
    try:  # sorted keys and sets: the same bytes in every process
        initial = msgspec.json.Encoder(enc_hook=_enc_hook, order="deterministic").encode(initial_state_of(decider))
    except (TypeError, NotImplementedError, OverflowError) as exc:
        raise ConfigurationError(f"Snapshots cannot encode the decider's initial state: {exc}") from exc
    return msgspec.json.encode([*named, msgspec.Raw(initial)])


class QuerySnapshotter(Generic[S]):
    """A :class:`~epoch.decisions.DecisionHandler`'s side of snapshots (see the module docstring)."""

    def __init__(
        self,
        store: SupportsQuerySnapshots,
        policy: Snapshots,
        decider: DeciderLike[Any, S, Any],
        read_stream: bool = False,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.codec: StateCodec[S] = _state_codec(policy, initial_state_of(decider))
        self.read_stream = read_stream
        self._decider = _decider_name(decider, name)
        self._keys: dict[tuple[Query, str | None], tuple[str, str]] = {}

    @classmethod
    def of(
        cls,
        store: object,
        policy: Snapshots | None,
        decider: DeciderLike[Any, S, Any],
        read_stream: bool = False,
        name: str | None = None,
    ) -> QuerySnapshotter[S] | None:
        """The snapshotter for ``store``, or ``None`` without a policy or when the store keeps no query
        snapshots (``ConfigurationError`` for a decider without a stable name, on any store)."""
        if policy is None:
            return None
        policy = _policy(policy)
        capable = query_snapshot_store(store)
        if capable is None:
            _decider_name(decider, name)  # the same configuration error as on a store that keeps them
            logger.info("%s keeps no query snapshots: every decision folds its whole query", type(store).__qualname__)
            return None
        return cls(capable, policy, decider, read_stream, name)

    def key(self, query: Query, stream: str | None) -> tuple[str, str]:
        """``(key, label)`` of a decision over ``query`` (and ``stream``, with ``read_stream``), built once each."""
        found = self._keys.get((query, stream))
        if found is None:
            items = _items(query)
            label = _label(items)
            digest = hashlib.sha256(msgspec.json.encode([msgspec.Raw(self._decider), items, stream])).hexdigest()
            found = (digest, label if stream is None else f"{label} + stream {stream}")
            if len(self._keys) >= 4096:  # one entry per query a handler sees: bounded, as a cache
                self._keys.clear()
            self._keys[query, stream] = found
        return found

    async def load(self, key: str) -> tuple[QueryState[S] | None, int]:
        """The key's usable snapshot (``None`` when there is none, or it does not decode or its versions do
        not fit the handler's ``read_stream``: skipped, logged), and the store's erasure count, read with it."""
        found, erasures = await self.store.load_query_snapshot(key, self.policy.version)
        if found is None:
            return None, erasures
        data, first, version = found.data, None, found.version
        try:
            if self.read_stream:  # [first version folded, state]
                first, raw = msgspec.json.decode(data, type=tuple[int | None, msgspec.Raw])
                data = bytes(raw)
            state = self.codec.decode(data)
        except ValueError as exc:  # msgspec's errors are ValueErrors
            logger.warning("query snapshot %s (%s) ignored: it does not decode (%s)", key, found.label, exc)
            return None, erasures
        if (first is None) != (version is None) or (
            first is not None and version is not None and not 0 <= first <= version
        ):  # without read_stream both are None
            logger.warning(
                "query snapshot %s (%s) ignored: its versions do not fit (first %r, version %r)",
                key, found.label, first, version,
            )  # fmt: skip
            return None, erasures
        return QueryState(state, found.position, found.count, version, first), erasures

    async def after_append(
        self,
        key: str,
        label: str,
        base_count: int | None,
        state: S,
        position: int,
        count: int,
        version: int | None,
        erasures: int,
        first: int | None = None,
    ) -> None:
        """Write a snapshot of ``state`` (the fold of ``count`` events up to ``position``, with ``read_stream``
        the stream's from version ``first`` to ``version``, read while the store had made ``erasures``
        erasures) when the policy says so; never raises."""
        try:
            if count == 0 or not self.policy.due(base_count, count, state):
                return
            data = self.codec.encode(state)
            if self.read_stream:
                data = msgspec.json.encode([first, msgspec.Raw(data)])
            await self.store.save_query_snapshot(
                key, self.policy.version, position, count, version, data, erasures, label
            )
        except Exception as exc:  # best effort: a snapshot only saves time, a decision never fails for one
            logger.warning("query snapshot %s (%s) not written (%s: %s)", key, label, type(exc).__name__, exc)
