"""AlertWriter: batching, ordering of commit callbacks, backpressure, retries, shutdown."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel.errors import StoreError
from sentinel.records import Ack, WriteBatch
from sentinel.store import AlertStore, AlertWriter
from sentinel.store.db import WriteFence
from tests.store.helpers import T0, make_alert, make_progress


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeStore(AlertStore):
    """Records what it was asked to write; fails the first ``failures`` writes."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__("sqlite://")
        self.failures = failures
        self.calls = 0
        self.written: list[WriteBatch] = []
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batches: Sequence[WriteBatch], fence: WriteFence | None = None) -> set[str]:
        self.gate.wait()
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreError("database is on fire")
        self.written.extend(batches)
        return set()  # no alert resolved by an operator


class Acks:
    """on_commit callback that records acks in the order it saw them."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.calls = 0

    def __call__(self, batches: Sequence[WriteBatch]) -> None:
        self.calls += 1
        for batch in batches:
            self.seen.extend(ack.token for ack in batch.acks)


def batch(i: int, device: str = "p1") -> WriteBatch:
    return WriteBatch(
        alerts=(make_alert(f"a-{device}", device=device, updated_at=T0 + i, windows=i + 1),),
        progress=(make_progress(device, T0 + i, i + 1),),
        acks=(Ack(token=i, epoch=1),),
    )


def test_batches_from_a_producer_commit_in_order(store: AlertStore) -> None:
    n = 300
    seen: list[int] = []
    stale: list[int] = []

    def on_commit(batches: Sequence[WriteBatch]) -> None:
        # Everything acknowledged here must already be readable from the database.
        last = batches[-1]
        if store.device_progress()[("pump", "p1")].readings < last.progress[0].readings:
            stale.extend(a.token for a in last.acks)
        for b in batches:
            seen.extend(a.token for a in b.acks)

    writer = AlertWriter(
        store, flush_interval=0.01, batch_max=16, queue_size=8, on_commit=on_commit
    )

    def produce() -> None:
        for i in range(n):
            writer.submit(batch(i))

    writer.start()
    producer = threading.Thread(target=produce)
    try:
        producer.start()
        producer.join(30)
        assert not producer.is_alive()
    finally:
        writer.stop()

    assert seen == list(range(n))
    assert stale == []
    assert writer.committed_batches == n
    assert writer.last_error is None
    assert store.device_progress()[("pump", "p1")].readings == n
    [alert] = store.open_alerts()
    assert alert.windows == n


def test_several_producers_lose_nothing() -> None:
    store, acks = FakeStore(), Acks()
    writer = AlertWriter(store, flush_interval=0.005, batch_max=7, queue_size=4, on_commit=acks)
    writer.start()

    def produce(base: int) -> None:
        for i in range(base, base + 200):
            writer.submit(
                WriteBatch(acks=(Ack(i, 1),), progress=(make_progress(str(base), T0 + i, i),))
            )

    producers = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(30)
    writer.stop()

    assert sorted(acks.seen) == sorted(i for k in range(4) for i in range(k * 1000, k * 1000 + 200))
    assert [b.acks[0].token for b in store.written] == acks.seen  # acks follow commit order
    for k in range(4):  # and each producer's own order is kept
        mine = [a for a in acks.seen if a // 1000 == k]
        assert mine == sorted(mine)


def test_stop_flushes_without_waiting_for_the_interval() -> None:
    store, acks = FakeStore(), Acks()
    writer = AlertWriter(store, flush_interval=60.0, on_commit=acks)
    writer.start()
    for i in range(5):
        writer.submit(batch(i))
    started = time.monotonic()
    writer.stop(timeout=5.0)

    # Far under the 60 s interval it would otherwise wait; generous for a busy machine.
    assert time.monotonic() - started < 30.0
    assert acks.seen == [0, 1, 2, 3, 4]
    assert len(store.written) == 5
    assert writer.committed_batches == 5
    assert writer.uncommitted == 0


def test_batches_are_grouped_up_to_batch_max() -> None:
    store, acks = FakeStore(), Acks()
    store.gate.clear()  # hold the first write so the rest pile up in the queue
    writer = AlertWriter(store, flush_interval=0.0, batch_max=4, queue_size=100, on_commit=acks)
    writer.start()
    writer.submit(batch(0))
    wait_for(lambda: writer.pending == 0)
    for i in range(1, 10):
        writer.submit(batch(i))
    store.gate.set()
    writer.stop()

    assert acks.seen == list(range(10))
    assert store.calls == 1 + 3  # [0], then [1..4], [5..8], [9]
    assert acks.calls == 4


def test_a_commit_starts_once_it_holds_flush_messages_acks() -> None:
    # Under load a reading should not wait out the whole interval: a commit that would
    # acknowledge flush_messages messages is worth its fsync now. The interval here is an
    # hour, so only the count can start these commits.
    store, acks = FakeStore(), Acks()
    writer = AlertWriter(store, flush_interval=3600.0, flush_messages=3, on_commit=acks)
    writer.start()
    try:
        for i in range(3):
            writer.submit(batch(i))
        wait_for(lambda: acks.seen == [0, 1, 2])
        writer.submit(WriteBatch(acks=(Ack(3, 1), Ack(4, 1), Ack(5, 1))))  # one pass, 3 acks
        wait_for(lambda: acks.seen == [0, 1, 2, 3, 4, 5])
        assert store.calls == 1  # the last batch had nothing to store
    finally:
        writer.stop(timeout=5.0)
    assert acks.calls == 2


def test_the_flush_interval_counts_from_when_the_oldest_batch_was_queued() -> None:
    # Batches that queued up while a long commit ran have waited already: the next commit
    # takes them at once rather than a whole interval after the thread got to them. Two
    # batches queued an hour-long interval ago, gathered without the thread running.
    writer = AlertWriter(FakeStore(), flush_interval=3600.0)
    queued = time.monotonic() - 3601.0
    for i in range(2):
        writer._queue.put_nowait((queued + i, batch(i)))
    gathered: list[list[WriteBatch] | None] = []
    gatherer = threading.Thread(target=lambda: gathered.append(writer._gather()), daemon=True)
    gatherer.start()
    gatherer.join(60.0)  # the old rule would wait the hour out
    assert gathered == [[batch(0), batch(1)]]


def test_empty_batches_still_ack_in_order() -> None:
    store, acks = FakeStore(), Acks()
    writer = AlertWriter(store, flush_interval=0.0, on_commit=acks)
    writer.start()
    writer.submit(WriteBatch(acks=(Ack(1, 1),)))
    writer.submit(WriteBatch())
    wait_for(lambda: writer.committed_batches == 2)
    assert store.calls == 0  # nothing to store: no database round trip, acks still flow
    writer.submit(batch(2))
    writer.submit(WriteBatch(acks=(Ack(3, 1), Ack(4, 1))))
    writer.stop()

    assert acks.seen == [1, 2, 3, 4]
    assert writer.committed_batches == 4
    assert [b for b in store.written if b.alerts or b.progress] == [batch(2)]


def test_submit_outside_running_writer_raises() -> None:
    writer = AlertWriter(FakeStore())
    with pytest.raises(RuntimeError, match="not running"):
        writer.submit(WriteBatch())
    writer.start()
    writer.stop()
    with pytest.raises(RuntimeError, match="not running"):
        writer.submit(WriteBatch())
    with pytest.raises(RuntimeError, match="once"):
        writer.start()


def test_full_queue_blocks_the_producer() -> None:
    store, acks = FakeStore(), Acks()
    store.gate.clear()
    writer = AlertWriter(store, flush_interval=0.0, batch_max=1, queue_size=2, on_commit=acks)
    writer.start()
    writer.submit(batch(0))
    wait_for(lambda: writer.pending == 0)  # taken by the thread, stuck in write
    writer.submit(batch(1))
    writer.submit(batch(2))
    with pytest.raises(TimeoutError):
        writer.submit(batch(3), timeout=0.2)

    released = threading.Event()

    def submit_blocking() -> None:
        writer.submit(batch(3))
        released.set()

    blocked = threading.Thread(target=submit_blocking)
    blocked.start()
    assert not released.wait(0.2)  # still full: the producer waits, nothing is dropped
    store.gate.set()
    assert released.wait(60)
    blocked.join(60)
    writer.stop()
    assert acks.seen == [0, 1, 2, 3]


@pytest.mark.allow_log_exceptions
def test_retries_after_store_errors_without_dropping() -> None:
    store, acks = FakeStore(failures=3), Acks()
    writer = AlertWriter(store, flush_interval=0.0, on_commit=acks)
    with capture_logs() as logs:
        writer.start()
        writer.submit(batch(0))
        wait_for(lambda: writer.last_error is not None)
        assert acks.seen == []  # nothing acknowledged while the write fails
        writer.submit(batch(1))
        wait_for(lambda: acks.seen == [0, 1])
        writer.stop()

    assert store.calls >= 4
    assert writer.last_error is None
    assert [b.acks for b in store.written] == [(Ack(0, 1),), (Ack(1, 1),)]
    failures = [e for e in logs if e["event"] == "writer_commit_failed"]
    assert len(failures) == 3
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in failures)
    assert [e["retry_in"] for e in failures] == [0.1, 0.2, 0.4]


@pytest.mark.allow_log_exceptions
def test_retries_while_sqlite_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.db"
    store = AlertStore(f"sqlite:///{path}", busy_timeout_ms=20)
    store.open()
    store.migrate()
    acks = Acks()
    writer = AlertWriter(store, flush_interval=0.0, on_commit=acks)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        with capture_logs():
            writer.start()
            writer.submit(batch(0))
            wait_for(lambda: writer.last_error is not None)
            assert "locked" in (writer.last_error or "")
            assert acks.seen == []
            blocker.execute("COMMIT")
            wait_for(lambda: acks.seen == [0])
        writer.stop()
        assert store.device_progress()[("pump", "p1")].readings == 1
        assert writer.last_error is None
    finally:
        blocker.close()
        store.close()


@pytest.mark.allow_log_exceptions
def test_stop_gives_up_when_the_database_stays_down() -> None:
    store, acks = FakeStore(failures=10**9), Acks()
    writer = AlertWriter(store, flush_interval=0.0, queue_size=10, on_commit=acks)
    with capture_logs() as logs:
        writer.start()
        writer.submit(batch(0))
        wait_for(lambda: writer.last_error is not None)
        writer.submit(batch(1))
        writer.submit(batch(2))
        started = time.monotonic()
        writer.stop(timeout=0.5)
        elapsed = time.monotonic() - started

    # It waited out its timeout and then gave up, instead of retrying forever (the upper
    # bound is loose: a busy machine may be slow to schedule the thread, never 60 s slow).
    assert 0.4 < elapsed < 60.0
    assert acks.seen == []
    assert writer.committed_batches == 0
    assert writer.uncommitted == 3  # the daemon exits non-zero on it
    [gave_up] = [e for e in logs if e["event"] == "writer_gave_up"]
    assert gave_up["unwritten_batches"] == 3
    assert "on fire" in gave_up["last_error"]


@pytest.mark.allow_log_exceptions
def test_on_commit_errors_do_not_stop_the_writer() -> None:
    store = FakeStore()
    seen: list[int] = []

    def on_commit(batches: Sequence[WriteBatch]) -> None:
        seen.extend(a.token for b in batches for a in b.acks)
        if len(seen) == 1:
            raise ValueError("mqtt client went away")

    writer = AlertWriter(store, flush_interval=0.0, on_commit=on_commit)
    with capture_logs() as logs:
        writer.start()
        writer.submit(batch(0))
        wait_for(lambda: seen == [0])
        writer.submit(batch(1))
        wait_for(lambda: seen == [0, 1])
        writer.stop()

    assert writer.committed_batches == 2
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["writer_on_commit_failed"]
