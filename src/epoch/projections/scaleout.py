"""Scale-out on PostgreSQL: several processes share one projection, each stream handled by one of them.

Streams are split into ``partitions`` by a stable hash of the stream name (CRC-32, the same in every
process and Python version). Each partition has its own checkpoint (``"{name}/{i}"``) and is held by one
process at a time through a session-level advisory lock — the lease. A process does all its work for a
partition on the connection that holds the lease, in one transaction per batch that also saves the
checkpoint: whatever it commits, it commits while holding the lease, and when the process dies its
connection closes, PostgreSQL releases the lock and another process takes the partition over from the
last committed checkpoint (within ``rebalance_interval`` seconds). Events of one stream are therefore
handled in order, by one process at a time; with ``handle_in_transaction`` exactly once. A batch
projection gets each partition's share of a page as one ``handle_batch`` call.

Fencing: a lease also has a generation (table ``epoch_leases``), bumped by every takeover, and each batch
transaction first checks (and share-locks) the generation it took: a runner whose lease was lost without
its connection failing (a session pooler that swapped the server session under it, a lock released
behind its back) finds a newer generation, commits nothing and drops the partition. A lost lease
connection (a network partition: the keepalives of ``network_options`` notice it within seconds, and the
server's end within the same bound, releasing the locks) makes the runner drop every partition and rejoin
on a new connection, taking partitions with new generations from their committed checkpoints.

Balance: every runner also holds a member lock; each wants ``ceil(partitions / members)`` partitions,
takes free ones and releases the extras, so partitions spread out as processes come and go.

Other failures stop the runner (``policy`` is not applied here; ``ProjectionRunner`` parks).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from epoch._backoff import Backoff
from epoch.errors import ConfigurationError, EpochError, StoreUnavailable
from epoch.personal import keys_of_codec, subjects_in
from epoch.projections._delivery import delivery_for
from epoch.projections._tables import create_table
from epoch.projections.checkpoints import SQLCheckpointStore
from epoch.projections.parking import SQLParkingLot
from epoch.projections.projection import EventDecoder, settings_of
from epoch.records import EventEnvelope, RecordedEvent
from epoch.stores import EventStore, PostgresTransaction, sql_store
from epoch.telemetry import current as current_telemetry

if TYPE_CHECKING:
    from epoch.telemetry._otel import ProjectionProbe

__all__ = ["LeaseLost", "PartitionedRunner", "partition_of"]

log = logging.getLogger("epoch.projections.scaleout")

_MEMBER_SLOTS = 1024

_LEASES = (
    "CREATE TABLE IF NOT EXISTS epoch_leases (name TEXT NOT NULL, partition INTEGER NOT NULL,"
    " generation BIGINT NOT NULL, PRIMARY KEY (name, partition))"
)
_TAKE = (
    "INSERT INTO epoch_leases (name, partition, generation) VALUES (?, ?, 1) ON CONFLICT (name, partition)"
    " DO UPDATE SET generation = epoch_leases.generation + 1 RETURNING generation"
)
# FOR SHARE: a takeover's bump waits for this batch to commit or roll back, so its checkpoint load sees it.
_FENCE = "SELECT generation FROM epoch_leases WHERE name = ? AND partition = ? FOR SHARE"


class LeaseLost(EpochError):
    """A partition's lease has a newer generation than the one this runner took: another runner owns it."""


def partition_of(stream: str, partitions: int) -> int:
    """The partition a stream belongs to: stable across processes, machines and Python versions."""
    return zlib.crc32(stream.encode("utf-8")) % partitions


def _lock_space(kind: str, name: str) -> int:
    return zlib.crc32(f"epoch:{kind}:{name}".encode()) & 0x7FFFFFFF


class PartitionedRunner:
    """Runs one projection as one of several cooperating processes (PostgreSQL store required).

    ``held`` is the set of partitions this process holds now. Use ``await runner.run()`` (until
    cancelled); ``async with`` closes its connection.
    """

    def __init__(
        self,
        store: EventStore,
        codec: EventDecoder,
        projection: object,
        partitions: int = 8,
        *,
        batch_size: int = 256,
        poll_interval: float = 0.2,
        rebalance_interval: float = 1.0,
    ) -> None:
        database = sql_store(store)
        conninfo = None if database is None or database.dialect != "postgresql" else database.conninfo
        if database is None or conninfo is None:
            raise ConfigurationError("PartitionedRunner needs a PostgreSQL store")
        if partitions < 1:
            raise ConfigurationError(f"partitions must be >= 1, not {partitions}")
        self.store = store
        self.codec = codec
        self.projection: Any = projection
        self.settings = settings_of(projection, codec)
        self.name = self.settings.name
        self.partitions = partitions
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.rebalance_interval = rebalance_interval
        self._conninfo: str = conninfo
        self._connection: Any = None
        self._checkpoints = SQLCheckpointStore(database)  # used through *_in(tx): on the lease connection
        # Only setup and handle are used (in the lease connection's transactions): nothing is parked here.
        self._delivery = delivery_for(
            projection, self.settings.kind, self.name, self._checkpoints, SQLParkingLot(database), database
        )
        self.held: dict[int, int] = {}
        """Partition -> its checkpoint, for the partitions this process holds."""
        self.generations: dict[int, int] = {}
        """Partition -> the lease generation this process took it with."""
        self._members_key = _lock_space("members", self.name)
        self._partitions_key = _lock_space("partitions", self.name)
        self._member_slot: int | None = None
        self._rebalanced_at = 0.0
        self._telemetry = current_telemetry()  # None without an OpenTelemetry SDK: nothing is recorded
        self._probes: dict[int, ProjectionProbe] = {}

    def checkpoint_name(self, partition: int) -> str:
        """The checkpoint name of a partition."""
        return f"{self.name}/{partition}"

    async def _connect(self) -> None:
        import psycopg

        from epoch.stores.postgres import network_options, server_side

        self._connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, **network_options(self._conninfo)
        )
        # The server probes this session as the client probes the server: cut off, the session ends
        # within the same bound and its advisory locks (the leases) go to the other runners.
        await self._connection.execute(
            "SELECT set_config('tcp_keepalives_idle', %s, false), set_config('tcp_keepalives_interval', %s, false),"
            " set_config('tcp_keepalives_count', %s, false), set_config('tcp_user_timeout', %s, false)",
            server_side(self._conninfo),
        )
        async with self._connection.transaction():
            tx = PostgresTransaction(self._connection)
            await self._checkpoints.ensure_table(tx)
            await create_table(tx, _LEASES)
            await self._delivery.setup(tx)
        for slot in random.sample(range(_MEMBER_SLOTS), _MEMBER_SLOTS):
            if await self._try_lock(self._members_key, slot):
                self._member_slot = slot
                return
        raise ConfigurationError(f"more than {_MEMBER_SLOTS} runners for projection {self.name!r}")

    async def _scalar(self, sql: str, params: Sequence[object]) -> Any:
        cursor = await self._connection.execute(sql, params)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _try_lock(self, space: int, key: int) -> bool:
        return bool(await self._scalar("SELECT pg_try_advisory_lock(%s, %s)", (space, key)))

    async def _rebalance(self) -> None:
        members = int(
            await self._scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
                " AND classid::bigint = %s AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (self._members_key,),
            )
        )
        target = math.ceil(self.partitions / max(members, 1))
        for partition in sorted(self.held, reverse=True)[: max(0, len(self.held) - target)]:
            await self._scalar("SELECT pg_advisory_unlock(%s, %s)", (self._partitions_key, partition))
            del self.held[partition]
            self.generations.pop(partition, None)
            log.info("%s: released partition %d (%d members)", self.name, partition, members)
        if len(self.held) < target:
            for partition in random.sample(range(self.partitions), self.partitions):
                if len(self.held) >= target:
                    break
                if partition not in self.held and await self._try_lock(self._partitions_key, partition):
                    async with self._connection.transaction():
                        tx = PostgresTransaction(self._connection)
                        [[generation]] = await tx.execute(_TAKE, [self.name, partition])
                        position = await self._checkpoints.load_in(tx, self.checkpoint_name(partition))
                    self.held[partition] = position
                    self.generations[partition] = int(generation)
                    log.info(
                        "%s: took partition %d from position %d (generation %d)",
                        self.name,
                        partition,
                        position,
                        generation,
                    )
        self._rebalanced_at = time.monotonic()

    async def run(self) -> None:
        """Hold partitions and process their events until cancelled; releases everything on exit.

        A lost lease connection drops every partition and rejoins on a new connection (with backoff)."""
        import psycopg

        wait = Backoff(first=0.05, cap=2.0)
        try:
            while True:
                try:
                    if self._connection is None:
                        await self._connect()
                        wait.reset()
                    if time.monotonic() - self._rebalanced_at >= self.rebalance_interval:
                        await self._rebalance()
                    if not await self._step():
                        await asyncio.sleep(self.poll_interval)
                except StoreUnavailable as exc:  # the store's reads: the lease connection may still be fine
                    pause = wait.next()
                    log.warning("%s: store unavailable (%s); retrying in %.2fs", self.name, exc, pause)
                    await asyncio.sleep(pause)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    pause = wait.next()
                    log.warning("%s: lease connection lost (%s); rejoining in %.2fs", self.name, exc, pause)
                    await self.close()
                    await asyncio.sleep(pause)
        finally:
            await self.close()

    async def _step(self) -> bool:
        """Process one page for the held partitions; returns whether there was anything to do."""
        if not self.held:
            return False
        after = min(self.held.values())
        page = [
            r
            async for r in self.store.read_all(after=after, limit=self.batch_size, categories=self.settings.categories)
        ]
        groups: dict[int, list[RecordedEvent]] = {}
        for recorded in page:
            partition = partition_of(recorded.stream, self.partitions)
            if partition in self.held and recorded.position > self.held[partition]:
                groups.setdefault(partition, []).append(recorded)
        for partition, records in groups.items():
            try:
                await self._process(partition, records)
            except LeaseLost as lost:
                log.warning("%s: %s; dropping it", self.name, lost)
                await self._scalar("SELECT pg_advisory_unlock(%s, %s)", (self._partitions_key, partition))
                del self.held[partition]
                del self.generations[partition]
        if page:
            # Every held partition has now seen the whole page: move the quiet ones on (in memory only),
            # so a partition without events does not pin `after`.
            for partition in self.held:
                self.held[partition] = max(self.held[partition], page[-1].position)
        return len(page) == self.batch_size or bool(groups)

    async def _process(self, partition: int, records: list[RecordedEvent]) -> None:
        if (keys := keys_of_codec(self.codec)) is not None:  # personal data: keys before decoding
            await keys.preload(subjects_in(r for r in records if self.settings.wants(r)))
        decoded = [self.codec.decode(r) for r in records if self.settings.wants(r)]
        wanted = [e for e in decoded if self.settings.keeps(e)]
        last = records[-1].position
        if self._telemetry is None or not wanted:  # (nothing wanted: only the checkpoint moves, no batch)
            await self._commit(partition, wanted, last)
        else:
            probe = self._probes.get(partition)
            if probe is None:
                probe = self._probes[partition] = self._telemetry.projection(self.name, partition)
            with probe.batch(wanted, last):  # the span covers the fence check and the commit
                await self._commit(partition, wanted, last)
            await probe.measure_lag(self.store, last)

    async def _commit(self, partition: int, wanted: list[EventEnvelope[Any]], last: int) -> None:
        async with self._connection.transaction():
            tx = PostgresTransaction(self._connection)
            rows = await tx.execute(_FENCE, [self.name, partition])
            current = int(rows[0][0]) if rows else 0
            if current != self.generations[partition]:
                raise LeaseLost(
                    f"partition {partition} of {self.name!r} has lease generation {current},"
                    f" not {self.generations[partition]}"
                )
            await self._delivery.handle(wanted, tx)
            await self._checkpoints.save_in(tx, self.checkpoint_name(partition), last)
        self.held[partition] = last

    async def close(self) -> None:
        """Release the leases (by closing the connection)."""
        connection, self._connection = self._connection, None
        self.held.clear()
        self.generations.clear()
        self._member_slot = None
        self._rebalanced_at = 0.0
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> PartitionedRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
