"""Fencing epochs (sentinel.cluster.fence) on a real PostgreSQL database: a writer that
acquired a partition at an older epoch commits nothing of it once a new owner bumped the
epoch, and a new owner's bump waits for a writer transaction in flight (issue #24)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from sentinel.cluster.fence import PartitionFence
from sentinel.cluster.ownership import PartitionOwnership, group_key
from sentinel.errors import FencedError
from sentinel.records import Ack, WriteBatch
from sentinel.store import AlertStore, AlertWriter
from tests.e2e_helpers import wait_for
from tests.store.helpers import T0, make_alert, make_progress

pytestmark = pytest.mark.postgres

PARTITIONS = 4
KEY = group_key("fence-test")
# device_partition(., 4): p3 -> 0, p4 -> 1, p1 -> 2.
P1, P3 = 2, 0


@pytest.fixture
def store(postgres_url: str) -> Iterator[AlertStore]:
    alert_store = AlertStore(postgres_url)
    alert_store.open()
    alert_store.migrate()
    try:
        yield alert_store
    finally:
        alert_store.close()


@pytest.fixture
def session(postgres_url: str) -> Iterator[Callable[[], Connection]]:
    """Autocommit connections, like an ownership session's; closed after the test."""
    engine = create_engine(postgres_url, poolclass=NullPool)
    opened: list[Connection] = []

    def connect() -> Connection:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        opened.append(conn)
        return conn

    try:
        yield connect
    finally:
        for conn in opened:
            conn.close()
        engine.dispose()


def _batch(device: str, token: int, partition: int) -> WriteBatch:
    return WriteBatch(
        alerts=(make_alert(f"a-{device}", device=device),),
        progress=(make_progress(device, T0 + token, token),),
        acks=(Ack(token, 1, partition),),
    )


def test_an_old_epoch_commits_nothing_after_a_new_owner_bumped_it(
    store: AlertStore, session: Callable[[], Connection]
) -> None:
    one = PartitionFence(KEY, PARTITIONS, "one")
    two = PartitionFence(KEY, PARTITIONS, "two")
    assert one.acquire(session(), P1) == 1
    assert one.acquire(session(), P3) == 1
    store.write([_batch("p1", 1, P1)], one)  # still the owner: commits
    assert store.device_progress()[("pump", "p1")].readings == 1

    assert two.acquire(session(), P1) == 2  # a new owner took p1's partition
    with pytest.raises(FencedError) as raised:
        store.write([_batch("p1", 2, P1), _batch("p3", 2, P3)], one)
    assert raised.value.partitions == {P1}
    # Rolled back whole: neither partition's part was written.
    assert store.device_progress()[("pump", "p1")].readings == 1
    assert ("pump", "p3") not in store.device_progress()
    assert one.fenced == 1
    # The new owner commits, and a member holding no epoch of a partition does not.
    store.write([_batch("p1", 3, P1)], two)
    assert store.device_progress()[("pump", "p1")].readings == 3
    with pytest.raises(FencedError):
        store.write([_batch("p3", 4, P3)], two)


def test_the_writer_drops_the_fenced_partition_unacknowledged_and_commits_the_rest(
    store: AlertStore, session: Callable[[], Connection]
) -> None:
    one = PartitionFence(KEY, PARTITIONS, "one")
    for partition in (P1, P3):
        one.acquire(session(), partition)
    PartitionFence(KEY, PARTITIONS, "two").acquire(session(), P1)
    acked: list[int] = []
    abandoned: list[Ack] = []
    writer = AlertWriter(
        store,
        flush_interval=0.0,
        on_commit=lambda batches: acked.extend(a.token for b in batches for a in b.acks),
        fence=one,
        on_fenced=abandoned.extend,
    )
    writer.start()
    try:
        writer.submit(
            WriteBatch(
                alerts=(make_alert("a-p1", device="p1"), make_alert("a-p3", device="p3")),
                progress=(make_progress("p1", T0, 5), make_progress("p3", T0, 7)),
                acks=(Ack(1, 1, P1), Ack(2, 1, P3)),
            )
        )
        wait_for(lambda: writer.committed_batches == 1, 30, "the batch to be committed")
    finally:
        writer.stop()
    assert acked == [2]  # p1's message is left for its new owner to count
    assert abandoned == [Ack(1, 1, P1)]  # and its release need not wait for the ack
    progress = store.device_progress()
    assert ("pump", "p1") not in progress
    assert progress[("pump", "p3")].readings == 7
    assert [a.device for a in store.open_alerts()] == ["p3"]
    assert one.fenced == 1
    assert writer.uncommitted == 0


class _Held:
    """A fence whose check, once it holds the share locks, waits for ``release``."""

    def __init__(self, fence: PartitionFence) -> None:
        self._fence = fence
        self.locked = threading.Event()
        self.release = threading.Event()

    def partition_of(self, device: str) -> int:
        return self._fence.partition_of(device)

    def check(self, conn: Connection, devices: Iterable[str]) -> frozenset[int]:
        stale = self._fence.check(conn, devices)
        self.locked.set()
        assert self.release.wait(30)
        return stale


def _lock_waiters(session: Connection) -> int:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int(session.execute(query).scalar_one())


def test_a_bump_waits_for_the_writer_transaction_in_flight(
    store: AlertStore, session: Callable[[], Connection]
) -> None:
    one = PartitionFence(KEY, PARTITIONS, "one")
    one.acquire(session(), P1)
    held = _Held(one)
    failures: list[Exception] = []

    def write() -> None:
        try:
            store.write([_batch("p1", 1, P1)], held)
        except Exception as err:  # noqa: BLE001 - thread boundary, reported to the test below
            failures.append(err)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert held.locked.wait(30)
        epochs: list[int] = []
        bump = threading.Thread(
            target=lambda: epochs.append(
                PartitionFence(KEY, PARTITIONS, "two").acquire(session(), P1)
            )
        )
        bump.start()
        watcher = session()
        wait_for(lambda: _lock_waiters(watcher) == 1, 30, "the bump to wait on the row lock")
        assert epochs == []
    finally:
        held.release.set()
        writer.join(30)
    bump.join(30)
    assert failures == []
    assert epochs == [2]
    # The old owner's transaction committed first, so the new owner reads its progress.
    assert store.device_progress()[("pump", "p1")].readings == 1
    assert one.fenced == 0


def test_ownership_bumps_the_epoch_of_each_partition_it_takes_again_after_a_lost_session(
    store: AlertStore, postgres_url: str, session: Callable[[], Connection]
) -> None:
    fence = PartitionFence(group_key("test"), 2, "one")
    taken: list[int] = []
    dropped: list[int] = []

    def take(partition: int) -> bool:
        taken.append(partition)
        return True

    ownership = PartitionOwnership(
        postgres_url,
        group="test",
        member="one",
        partitions=2,
        interval=0.1,
        take=take,
        give=lambda p: True,
        drop=dropped.append,
        fence=fence,
    )
    ownership.start()
    try:
        wait_for(lambda: fence.epochs() == {0: 1, 1: 1}, 30, "both partitions taken")
        ended = session().execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'sentinel:%:one:%'"
            )
        )
        assert ended.all() == [(True,)]
        wait_for(lambda: sorted(dropped) == [0, 1], 30, "both partitions dropped")
        wait_for(lambda: fence.epochs() == {0: 2, 1: 2}, 30, "both taken again, bumped")
        assert sorted(taken) == [0, 0, 1, 1]
    finally:
        ownership.stop()
        ownership.close()
    assert fence.epochs() == {}
    rows = session().execute(text("SELECT partition, epoch, member FROM partition_epochs"))
    assert sorted(rows.all()) == [(0, 2, "one"), (1, 2, "one")]
