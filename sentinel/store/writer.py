"""AlertWriter: the one thread that writes to the database, in batched transactions.

The pipeline worker submits a WriteBatch per pass; the writer folds what arrived within
``flush_interval`` of the oldest (at most ``batch_max`` batches; once they carry
``flush_messages`` acknowledgements it takes what is queued and waits for no more) into one
transaction, then hands them to
``on_commit``, which the app uses to have the source acknowledge the messages behind them.
Nothing is acknowledged before it is committed, and nothing submitted is ever dropped: while
the database fails the writer retries with capped backoff and its bounded queue pushes back
on the pipeline (and so, through unacknowledged messages, on the broker).

In a cluster (``fence``), a transaction that would commit readings of a partition another
member has taken since this one acquired it is rolled back (sentinel.cluster.fence): that
partition's part of the batches is dropped unacknowledged, for its new owner to count, and
the rest committed.

Between commits the same thread prunes the score history (``history_retention``), at most
``prune_batch`` rows a pass, once a minute and sooner while there is a backlog: one writer
on SQLite, and no pass holds the database for long.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from sentinel.errors import FencedError, StoreError
from sentinel.records import Ack, WriteBatch
from sentinel.store.db import AlertStore, WriteFence

__all__ = ["AlertWriter"]

log = structlog.get_logger(__name__)

_IDLE_POLL = 0.5  # seconds; stop() also wakes the thread at once through _WAKE
_CLOSING_POLL = 0.05  # while a submit() that began before stop() is still enqueueing
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
_SUBMIT_SLICE = 0.25  # blocked submitters re-check whether the writer gave up this often
_PRUNE_EVERY = 60.0  # seconds between history pruning passes ...
_PRUNE_AGAIN = 1.0  # ... or this soon after one that deleted a full batch

_WAKE = WriteBatch()  # put by stop(), compared by identity, never written


class AlertWriter:
    """Single writer thread with a bounded queue; ``start()`` / ``submit()`` / ``stop()``."""

    def __init__(
        self,
        store: AlertStore,
        *,
        flush_interval: float = 0.2,
        flush_messages: int = 256,
        batch_max: int = 500,
        queue_size: int = 1000,
        on_commit: Callable[[Sequence[WriteBatch]], None] | None = None,
        on_resolved: Callable[[Iterable[str]], None] | None = None,
        history_retention: float | None = None,
        prune_batch: int = 20_000,
        fence: WriteFence | None = None,
        on_fenced: Callable[[Sequence[Ack]], None] | None = None,
    ) -> None:
        if (
            flush_interval < 0
            or flush_messages < 1
            or batch_max < 1
            or queue_size < 1
            or prune_batch < 1
        ):
            raise ValueError(
                "flush_interval >= 0, flush_messages >= 1, batch_max >= 1, queue_size >= 1 "
                "and prune_batch >= 1"
            )
        self._store = store
        self._fence = fence
        # Told the acks of a fenced-off partition's part, which will never be sent.
        self._on_fenced = on_fenced
        self._flush_interval = flush_interval
        self._flush_messages = flush_messages
        self._batch_max = batch_max
        self._on_commit = on_commit
        # Told which alerts in a commit an operator had resolved (the pipeline closes them).
        self._on_resolved = on_resolved
        # One spare slot so stop() can always wake the thread without blocking.
        # Each batch with the monotonic time it was queued: the flush interval counts from
        # the oldest one's, so a batch queued while a commit ran does not wait a whole
        # interval more after it.
        self._queue: queue.Queue[tuple[float, WriteBatch]] = queue.Queue(maxsize=queue_size + 1)
        self._capacity = queue_size
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False  # stop() was called: no new submissions
        self._submitting = 0  # submitters past the closed check, not yet enqueued
        self._deadline: float | None = None  # monotonic time at which stop() gives up
        self._abandoned = threading.Event()  # set when the thread exits (done or gave up)
        self._sleep = threading.Event()  # never set: its wait() is the backoff's timed wait
        self._last_error: str | None = None
        self._submitted = 0
        self._committed = 0
        self.write_errors = 0  # failed commits (each retried), for metrics
        # Seconds of score history kept (None: never pruned), rows per pruning pass.
        self._retention = history_retention
        self._prune_batch = prune_batch
        self._next_prune = 0.0  # monotonic; the first pass runs at start
        self.history_pruned = 0  # rows, for metrics

    @property
    def last_error(self) -> str | None:
        """The latest failed commit's error, cleared by the next successful commit."""
        return self._last_error

    @property
    def committed_batches(self) -> int:
        return self._committed

    @property
    def uncommitted(self) -> int:
        """Batches submitted and not committed; after ``stop()``, what it gave up on."""
        return self._submitted - self._committed

    @property
    def pending(self) -> int:
        """Batches queued and not yet taken by the thread (a gauge for metrics)."""
        return self._queue.qsize()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("AlertWriter can only be started once")
            self._thread = threading.Thread(target=self._run, name="sentinel-writer", daemon=True)
            self._thread.start()
        log.info(
            "writer_started",
            flush_interval=self._flush_interval,
            flush_messages=self._flush_messages,
            batch_max=self._batch_max,
        )

    def submit(self, batch: WriteBatch, timeout: float | None = None) -> None:
        """Queue a batch; blocks while the queue is full. TimeoutError after ``timeout``."""
        with self._lock:
            if self._thread is None or self._closed:
                raise RuntimeError("AlertWriter is not running")
            self._submitting += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if self._abandoned.is_set():
                    raise RuntimeError("AlertWriter has stopped; batch not queued")
                # Keep the spare slot for stop()'s wake-up.
                if self._queue.qsize() < self._capacity:
                    # Counted first: the thread may commit it before put_nowait returns.
                    with self._lock:
                        self._submitted += 1
                    try:
                        self._queue.put_nowait((time.monotonic(), batch))
                        return
                    except queue.Full:
                        with self._lock:
                            self._submitted -= 1
                wait = _SUBMIT_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError("writer queue full")
                self._wait_for_space(wait)
        finally:
            with self._lock:
                self._submitting -= 1

    def _wait_for_space(self, timeout: float) -> None:
        # Queue.not_full is notified whenever the thread takes a batch. It shares the queue's
        # mutex, so the size is read directly here (qsize() would take the mutex again).
        with self._queue.not_full:
            if len(self._queue.queue) >= self._capacity:
                self._queue.not_full.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Commit everything submitted so far, then join; give up after ``timeout``."""
        with self._lock:
            thread = self._thread
            if thread is None or self._closed:
                self._closed = True
                return
            self._closed = True
            self._deadline = time.monotonic() + timeout
        # When even the spare slot is taken the thread is busy anyway and will see _closed.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((time.monotonic(), _WAKE))
        # A little slack for a write that is in flight when the deadline passes.
        thread.join(timeout + 1.0)
        if thread.is_alive():
            log.error("writer_stop_timeout", timeout=timeout, pending=self._queue.qsize())
        else:
            log.info("writer_stopped", committed_batches=self._committed)

    def _run(self) -> None:
        try:
            while True:
                batches = self._gather()
                if batches is None:
                    return
                if batches and not self._commit(batches):
                    return
                if self._retention is not None and time.monotonic() >= self._next_prune:
                    self._prune(self._retention)
        finally:
            self._abandoned.set()

    def _get(self, timeout: float) -> tuple[float, WriteBatch] | None:
        """The next batch and when it was queued; None on a timeout or stop()'s wake-up."""
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        return None if item[1] is _WAKE else item

    def _finished(self) -> bool:
        with self._lock:
            return self._closed and self._submitting == 0 and self._queue.empty()

    def _gather(self) -> list[WriteBatch] | None:
        """The next group of batches to commit; [] when idle, None when stopped and drained."""
        first = self._get(_CLOSING_POLL if self._closed else _IDLE_POLL)
        if first is None:
            return None if self._finished() else []
        queued_at, batch = first
        batches = [batch]
        # ``flush_interval`` is the longest a change waits before its commit starts: counted
        # from when the oldest batch was queued, not from when this thread got to it (which,
        # after a long commit, would make it wait the commit and a whole interval more).
        flush_at = queued_at + self._flush_interval
        # ... or less, once the commit would acknowledge ``flush_messages``: under load a
        # commit then starts as soon as it is worth its fsync, not a whole interval later.
        # It still takes everything already queued, so a backlog commits in large groups.
        acks = len(batch.acks)
        while len(batches) < self._batch_max:
            # Once stopping, take what is queued without waiting out the flush interval.
            full = self._closed or acks >= self._flush_messages
            remaining = 0.0 if full else flush_at - time.monotonic()
            item = self._get(remaining)
            if item is None:
                if remaining <= 0 or self._closed:
                    break
                continue  # woken by _WAKE: go round and drain without waiting
            batches.append(item[1])
            acks += len(item[1].acks)
        return batches

    def _commit(self, batches: list[WriteBatch]) -> bool:
        """Write until it succeeds; False if stop()'s deadline passed first."""
        delay = _BACKOFF_MIN
        while True:
            try:
                resolved = None
                if any(b.alerts or b.progress or b.audit or b.resets or b.history for b in batches):
                    resolved = self._store.write(batches, self._fence)
            except FencedError as err:
                assert self._fence is not None
                self._abandon([a for b in batches for a in b.acks if a.partition in err.partitions])
                batches = _without(batches, err.partitions, self._fence.partition_of)
                log.warning(
                    "writer_fenced", partitions=sorted(err.partitions), batches=len(batches)
                )
                continue  # the rest at once: nothing was written
            except Exception as err:  # thread boundary: retry, never drop
                self._last_error = f"{type(err).__name__}: {err}"
                self.write_errors += 1
                log.exception("writer_commit_failed", batches=len(batches), retry_in=delay)
                if not self._backoff(delay):
                    self._give_up(batches)
                    return False
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self._last_error = None
            self._committed += len(batches)
            self._notify(batches)
            if resolved:
                self._notify_resolved(resolved)
            return True

    def _prune(self, retention: float) -> None:
        """One bounded pass over the score history; a failure waits for the next pass."""
        before = datetime.now(UTC) - timedelta(seconds=retention)
        try:
            pruned = self._store.prune_history(before, self._prune_batch)
        except StoreError as err:  # the next pass tries again; the writes go on
            log.warning("history_prune_failed", error=f"{type(err).__name__}: {err}")
            pruned = 0
        full = pruned >= self._prune_batch
        self._next_prune = time.monotonic() + (_PRUNE_AGAIN if full else _PRUNE_EVERY)
        if pruned:
            self.history_pruned += pruned
            log.info("history_pruned", rows=pruned, before=before.isoformat(), more=full)

    def _backoff(self, delay: float) -> bool:
        """Wait before the next attempt; False when stop()'s deadline has passed."""
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                return False
            delay = min(delay, left)
        self._sleep.wait(delay)
        return True

    def _give_up(self, batches: list[WriteBatch]) -> None:
        unwritten = len(batches)
        while True:
            try:
                if self._queue.get_nowait()[1] is not _WAKE:
                    unwritten += 1
            except queue.Empty:
                break
        log.error("writer_gave_up", unwritten_batches=unwritten, last_error=self._last_error)

    def _abandon(self, acks: list[Ack]) -> None:
        if self._on_fenced is None or not acks:
            return
        try:
            self._on_fenced(acks)
        except Exception:  # thread boundary: a callback bug must not stop the writes
            log.exception("writer_on_fenced_failed")

    def _notify_resolved(self, uids: Iterable[str]) -> None:
        if self._on_resolved is None:
            return
        try:
            self._on_resolved(uids)
        except Exception:  # thread boundary: a callback bug must not stop the writes
            log.exception("writer_on_resolved_failed")

    def _notify(self, batches: list[WriteBatch]) -> None:
        if self._on_commit is None:
            return
        try:
            self._on_commit(batches)
        except Exception:  # thread boundary: a callback bug must not stop the writes
            log.exception("writer_on_commit_failed", batches=len(batches))


def _without(
    batches: Sequence[WriteBatch], partitions: frozenset[int], partition_of: Callable[[str], int]
) -> list[WriteBatch]:
    """The batches less what belongs to ``partitions``: their devices' alerts, progress,
    resets and history, and the acks of their messages (audit events stay)."""

    def keep(device: str) -> bool:
        return partition_of(device) not in partitions

    return [
        WriteBatch(
            alerts=tuple(a for a in b.alerts if keep(a.device)),
            progress=tuple(p for p in b.progress if keep(p.device)),
            acks=tuple(a for a in b.acks if a.partition not in partitions),
            audit=b.audit,
            resets=tuple(r for r in b.resets if keep(r.device)),
            history=tuple(h for h in b.history if keep(h.device)),
        )
        for b in batches
    ]
