"""Which daemon reads which partition: PostgreSQL session advisory locks (issue #24).

Every member of a group holds one connection to the shared PostgreSQL database, named
(``application_name``) ``sentinel:<group key>:<member>:<nonce>``, so the members are the
sessions of that name in ``pg_stat_activity``. A member reads partition ``p`` only while its
connection holds the advisory lock ``(<group key>, p)``; who holds what is in ``pg_locks``.
A process that dies (SIGKILL, a crash, a lost host) loses its connection, and PostgreSQL
ends the session: its locks and its membership go at once, with nothing to expire.

Each look (every ``interval``): with N members, a member's fair share is P // N, one more
for the first P % N of them by name. A member over its share releases partitions cleanly
(``give``: stop fetching, commit and acknowledge what is in flight) and only then unlocks;
one under it locks free partitions (``pg_try_advisory_lock``: one winner) and only then
starts reading them (``take``). So a new owner starts after the old one released or died.
The member holding the lock ``(<group key>, PUBLISHER_SLOT)`` drains the alert outbox.
With a ``fence`` (sentinel.cluster.fence), a member bumps a partition's epoch after its
lock and before ``take``, so that a member whose session the server ended cannot commit
the partition's readings any more once the new owner has it.
Why PostgreSQL rather than NATS KV: docs/ARCHITECTURE.md, *Scaling out*.
"""

from __future__ import annotations

import secrets
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from sentinel.cluster.fence import PartitionFence

__all__ = [
    "PUBLISHER_SLOT",
    "PartitionOwnership",
    "fair_share",
    "group_key",
    "owners",
    "plan",
]

log = structlog.get_logger(__name__)

PUBLISHER_SLOT = 1_000_000  # second lock key of the outbox publisher: above any partition

_OWNERS = text(
    "SELECT l.objid::bigint AS slot, a.application_name AS member "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.classid = CAST(:key AS oid) AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)
_MEMBERS = text(
    "SELECT application_name FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name LIKE :prefix"
)


def group_key(group: str) -> int:
    """The first advisory-lock key of a group (a non-negative int4)."""
    return zlib.crc32(f"sentinel-cluster:{group}".encode()) & 0x7FFFFFFF


def _prefix(key: int) -> str:
    return f"sentinel:{key:08x}:"


def fair_share(members: Sequence[str], me: str, partitions: int) -> int:
    """How many partitions ``me`` should hold among ``members``."""
    ranked = sorted(members)
    count = len(ranked)
    return partitions // count + (1 if ranked.index(me) < partitions % count else 0)


def plan(
    me: str, members: Sequence[str], held: Mapping[int, str], partitions: int
) -> tuple[list[int], list[int]]:
    """What ``me`` should do now: (partitions to release, free partitions to try to take).

    ``held`` maps the partitions some member holds to that member. Free partitions are
    tried starting at an offset by rank, so that members under their share do not all
    race for the same one.
    """
    mine = sorted(p for p, m in held.items() if m == me)
    share = fair_share(members, me, partitions)
    if len(mine) > share:
        return mine[share:], []
    free = [p for p in range(partitions) if p not in held]
    if not free:
        return [], []
    start = sorted(members).index(me) * len(free) // max(len(members), 1)
    rotated = free[start:] + free[:start]
    return [], rotated[: share - len(mine)]


def owners(url: str, group: str) -> dict[int, str]:
    """Partition -> member name (without the nonce) of every partition held now, for
    tests, the demo and operators; the publisher's lock appears as ``PUBLISHER_SLOT``."""
    key = group_key(group)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(_OWNERS, {"key": key}).all()
    finally:
        engine.dispose()
    return {int(r.slot): _member_name(str(r.member)) for r in rows}


def _member_name(application_name: str) -> str:
    parts = application_name.split(":")
    return parts[2] if len(parts) == 4 else application_name


class PartitionOwnership:
    """Takes and gives partitions for this daemon; ``start()``, ``stop()``, ``close()``.

    ``take(p)`` must start reading ``p`` (False if it could not; the lock is let go);
    ``give(p)`` must stop reading it cleanly (False if it could not drain in time; the
    lock is kept and the release tried again); ``drop(p)`` must stop reading it whatever
    happens (the session, and the lock with it, is lost). All are called on this
    component's thread.
    ``stop()`` ends the looking but keeps the locks, so that the daemon's own drain at its
    stop happens while it still owns its partitions; ``close()`` then lets them go.
    """

    def __init__(
        self,
        url: str,
        *,
        group: str,
        member: str,
        partitions: int,
        interval: float,
        take: Callable[[int], bool],
        give: Callable[[int], bool],
        drop: Callable[[int], None],
        fence: PartitionFence | None = None,
    ) -> None:
        self._url = make_url(url)
        self._key = group_key(group)
        self._group = group
        self.member = member
        self._name = f"{_prefix(self._key)}{member}:{secrets.token_hex(3)}"
        self._partitions = partitions
        self._interval = interval
        self._take = take
        self._give = give
        self._drop = drop
        self._fence = fence
        self._conn: Connection | None = None
        self._owned: set[int] = set()
        self._publisher = False
        self._members: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rebalances = 0  # partitions taken or given since start
        self.errors = 0  # failed looks (the database was away)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "cluster_joining",
            group=self._group,
            member=self._name,
            partitions=self._partitions,
            interval=self._interval,
        )
        self._thread = threading.Thread(target=self._run, name="cluster", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop looking; the locks stay held until ``close()``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("cluster_stop_timed_out", timeout=timeout)
            self._thread = None

    def close(self) -> None:
        """Let every lock go (ending the session does that), after the daemon's drain."""
        self._disconnect()
        if self._owned:
            log.info("cluster_left", partitions=sorted(self._owned))
        self._forget(self._owned)
        self._owned.clear()
        self._publisher = False

    # -- state, read on other threads -----------------------------------------------------

    @property
    def owned(self) -> tuple[int, ...]:
        return tuple(sorted(self._owned))

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    @property
    def connected(self) -> bool:
        """True while the session that holds the locks is open."""
        return self._conn is not None

    def status(self) -> dict[str, object]:
        """What /healthz reports of this member."""
        return {
            "member": self._name,
            "connected": self.connected,
            "members": len(self._members),
            "partitions": list(self.owned),
            "publisher": self._publisher,
            "rebalances": self.rebalances,
            "errors": self.errors,
            "fenced": self.fenced,
        }

    @property
    def fenced(self) -> int:
        """Partitions' parts of write transactions dropped because another member had
        taken them (sentinel.cluster.fence)."""
        return self._fence.fenced if self._fence is not None else 0

    @property
    def publisher(self) -> bool:
        """True while this daemon holds the outbox publisher's lock."""
        return self._publisher

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._look()
                except SQLAlchemyError as err:
                    self.errors += 1
                    log.error("cluster_database_error", error=str(err).splitlines()[0])
                    self._lost()
                if self._stop.wait(self._interval):
                    return
        except Exception:  # thread boundary: say why partitions stopped moving
            log.exception("cluster_crashed")

    def _connection(self) -> Connection:
        if self._conn is None:
            engine = create_engine(
                self._url,
                poolclass=NullPool,
                connect_args={"application_name": self._name},
            )
            self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            log.info("cluster_connected", member=self._name)
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
                conn.engine.dispose()
            except SQLAlchemyError as err:
                log.warning("cluster_close_failed", error=str(err).splitlines()[0])

    def _lost(self) -> None:
        """The session is gone or in doubt, and its locks with it: read nothing more."""
        self._disconnect()
        self._publisher = False
        for partition in sorted(self._owned):
            self._drop(partition)  # stops fetching; waits a while for what is in flight
        if self._owned:
            log.warning("cluster_partitions_dropped", partitions=sorted(self._owned))
        self._forget(self._owned)
        self._owned.clear()

    def _look(self) -> None:
        conn = self._connection()
        members = tuple(sorted(conn.scalars(_MEMBERS, {"prefix": _prefix(self._key) + "%"})))
        if members != self._members:
            log.info("cluster_members", members=list(members), count=len(members))
            self._members = members
        me = self._name
        held: dict[int, str] = {}
        publisher_held = False
        for row in conn.execute(_OWNERS, {"key": self._key}):
            slot = int(row.slot)
            if slot == PUBLISHER_SLOT:
                publisher_held = True
            elif slot < self._partitions:
                held[slot] = str(row.member)
        if me not in members:  # our own session is not listed yet: look again next time
            return
        if not self._publisher and not publisher_held:
            self._publisher = self._try_lock(conn, PUBLISHER_SLOT)
            if self._publisher:
                log.info("cluster_publisher", member=self._name)
        release, take = plan(me, members, held, self._partitions)
        for partition in release:
            if self._stop.is_set():
                return
            if self._give(partition):
                # Not ours from here on (a snapshot of it is no longer saved), then free.
                self._owned.discard(partition)
                self._forget([partition])
                self._unlock(conn, partition)
                self.rebalances += 1
                log.info("cluster_released", partition=partition, owned=self.owned)
        for partition in take:
            if self._stop.is_set():
                return
            if not self._try_lock(conn, partition):
                continue  # another member was quicker
            if self._fence is not None:
                # Committed before the partition is read; waits for a writer transaction
                # of a previous owner that holds the row (sentinel.cluster.fence).
                self._fence.acquire(conn, partition)
            if self._take(partition):
                self._owned.add(partition)
                self.rebalances += 1
                log.info("cluster_acquired", partition=partition, owned=self.owned)
            else:
                self._forget([partition])
                self._unlock(conn, partition)

    def _forget(self, partitions: Iterable[int]) -> None:
        if self._fence is not None:
            for partition in list(partitions):
                self._fence.forget(partition)

    def _try_lock(self, conn: Connection, slot: int) -> bool:
        query = text("SELECT pg_try_advisory_lock(:key, :slot)")
        return bool(conn.execute(query, {"key": self._key, "slot": slot}).scalar())

    def _unlock(self, conn: Connection, slot: int) -> None:
        conn.execute(
            text("SELECT pg_advisory_unlock(:key, :slot)"), {"key": self._key, "slot": slot}
        )
