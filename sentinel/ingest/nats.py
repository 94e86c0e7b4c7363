"""The NATS JetStream source: durable pull consumers, one per partition of the fleet.

It is a ``Source`` (``sentinel.ingest.source``). Publishers keep today's MQTT topic layout:
a NATS client publishes ``plant.pump-7.telemetry`` for the topic ``plant/pump-7/telemetry``,
and NATS's MQTT listener turns an MQTT publish into that same subject. The server's subject
mapping (``sentinel.ingest.subjects``; nats-server 2.9 can partition only there, in the account's
``mappings``: stream subject transforms came in 2.10) rewrites it to
``<prefix>.<partition>.plant.pump-7.telemetry``, the partition a hash of the device level
alone, so every reading of a device lands in one partition. One JetStream stream captures
``<prefix>.*.>``; partition ``p`` is read by a durable pull consumer
``<consumer_prefix>-p<p>-<n>`` filtered on ``<prefix>.<p>.>``, in stream order.

Delivery guarantee, as for MQTT: a message is acknowledged (explicit ack) only after the
transaction holding what it carried has committed; a daemon killed at any point gets every
unacknowledged message again, and readings already committed are recognised by the device's
``last_ts`` and skipped as duplicates. JetStream redelivers an unacknowledged message only
after ``ack_wait``, by then behind newer ones, which the order check would drop as
``out_of_order``. So whenever the source (re)connects, or acquires a partition, it gives the
partition a new consumer at the earlier one's ack floor and deletes that one: everything not
acknowledged comes again, in stream order, and what had been committed is recognised. Acks
of the earlier consumers are then dropped (the epoch). Each consumer has a name of its own
(``n`` grows), so that a daemon still pulling from one it lost gets nothing more.

nats-py is asyncio: its loop runs on this source's own thread, which fetches, parses and
hands each fetched batch to a hand-off thread that offers it to the sink in order, blocking
for room as MQTT's network thread does, so that the loop goes on sending acks, pings and
"in progress" reports meanwhile. Acks come from the writer's thread and are passed to the
loop with ``call_soon_threadsafe``.

Which partitions it reads may change while it runs (``acquire``, ``release``): with
``[cluster]`` on, ``sentinel.cluster.ownership`` hands partitions between daemons. A
release stops fetching the partition, drops what was fetched but not yet handed (it comes
again to the next owner, whose consumer starts at the ack floor) and returns only once
everything handed has been committed and its acks flushed, so the next owner never
works on a device at the same time as this one (docs/ARCHITECTURE.md, *Scaling out*).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from sentinel.config import NatsConfig
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Sink, SourceStatus
from sentinel.ingest.subjects import subject_to_topic
from sentinel.natslink import tls_context
from sentinel.records import Ack, Delivery, Rejected, RejectReason

__all__ = ["NatsSource"]

log = structlog.get_logger(__name__)

# The hand-off thread waits for room in steps this long, checking for a pause in between.
SINK_STEP = 1.0
FETCH_WAIT = 1.0  # seconds a pull request waits for messages
RETRY_DELAY = 1.0  # after a failed setup (JetStream not ready after a server restart)
# An idle partition checks this often that its consumer still exists (see ``_read``).
CONSUMER_CHECK = 5.0
CONSUMER_PAGE = 256  # consumers the server lists per request


class NatsSource:
    """Consumes this daemon's partitions and hands parsed deliveries to ``sink``.

    ``sink`` is called on the source's thread; while it has no room the partition waits
    (keeping the message's order) and tells JetStream the message is in progress, so it is
    not redelivered meanwhile. ``on_fatal`` is called once when the server refuses our
    credentials, which retrying will not fix.
    """

    def __init__(
        self,
        config: NatsConfig,
        *,
        parser: MessageParser,
        sink: Sink,
        max_ack_pending: int,
        on_fatal: Callable[[str], None],
        partitions: Iterable[int] | None = None,
    ) -> None:
        # partitions: what to read from the start; None: the config's (``consume``, or
        # all). The cluster starts with none and acquires them one by one.
        self._config = config
        self._wanted: set[int] = set(config.owned if partitions is None else partitions)
        self._parser = parser
        self._sink = sink
        self._max_ack_pending = max(max_ack_pending, config.fetch_batch)
        self._on_fatal = on_fatal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._epoch = 0  # bumped each time the consumers are recreated; tags acks
        self._unacked: dict[int, Msg] = {}  # token -> message; touched on the loop only
        # token -> partition of every delivery handed to the sink and not yet acked, of
        # any epoch: a partition is released only once none of its own is left (the
        # sink has committed them all). Touched on the loop only.
        self._inflight: dict[int, int] = {}
        self._inflight_count: Counter[int] = Counter()
        self._acked: asyncio.Event | None = None  # set on the loop when acks came in
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None  # while the consumers are set up
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._subs: dict[int, JetStreamContext.PullSubscription] = {}
        self._consumer_names: dict[int, str] = {}  # partition -> its current consumer
        # Per partition being read: set to stop its reader and its hand-off (a release).
        self._halted: dict[int, threading.Event] = {}
        self._next_token = 0
        self._paused = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._resubscribe: asyncio.Event | None = None
        self._stop_async: asyncio.Event | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()
        # Offers deliveries to the sink, which may block for room (see ``_hand``).
        self._handoff = ThreadPoolExecutor(1, thread_name_prefix="nats-handoff")
        self._fatal: str | None = None
        self.connects = 0
        self.unacked_dropped = 0  # acks of an earlier epoch, deliberately not sent
        self.redelivered = 0  # messages JetStream delivered more than once
        self.progress_reports = 0  # "in progress" sent for messages waiting for room
        self.pulls: Counter[int] = Counter()  # partition -> fetches made

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self._config
        log.info(
            "nats_connecting",
            servers=cfg.servers,
            stream=cfg.stream,
            partitions=cfg.partitions,
            consume=list(cfg.owned),
            tls=cfg.tls.enabled,
        )
        self._thread = threading.Thread(target=self._run_thread, name="nats-source", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Hand nothing more to the sink; what arrives stays unacknowledged."""
        self._paused.set()

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        self._paused.set()
        self._stopping.set()
        if loop is not None and self._stop_async is not None:
            stop_async = self._stop_async
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stop_async.set)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("nats_stop_timed_out", timeout=timeout)
        self._thread = None

    # -- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def wait_subscribed(self, timeout: float) -> bool:
        """True once every partition's consumer is set up on the current connection."""
        return self._subscribed.wait(timeout)

    def status(self) -> SourceStatus:
        return SourceStatus("nats", self.connected, self.connects)

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this source reads (or will, once connected)."""
        return tuple(sorted(self._wanted))

    def acquire(self, partition: int) -> bool:
        """Start reading ``partition``, its consumer recreated at its ack floor; blocks
        until it reads (True) or the setup failed (False; nothing was started)."""
        return self._on_loop(self._acquire(partition))

    def release(self, partition: int, timeout: float, *, keep_on_timeout: bool = True) -> bool:
        """Stop reading ``partition`` cleanly: fetch no more, and return once everything
        handed to the sink is committed and acknowledged (True). After ``timeout`` the
        partition is read again from its ack floor and False is returned: the caller
        still owns it; unless ``keep_on_timeout`` is False (the caller lost it anyway),
        when it stays released."""
        return self._on_loop(self._release(partition, timeout, keep_on_timeout))

    def _on_loop(self, coro: Coroutine[Any, Any, bool]) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping.is_set():
            coro.close()
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop closed between the check and the call
            coro.close()
            return False
        return future.result()

    def ack(self, acks: Iterable[Ack]) -> None:
        """Acknowledge committed messages (called on the writer's thread)."""
        batch = list(acks)
        loop = self._loop
        if not batch:
            return
        if loop is None or loop.is_closed():
            self.unacked_dropped += len(batch)
            return
        try:
            loop.call_soon_threadsafe(self._ack_on_loop, batch)
        except RuntimeError:  # closed between the check and the call
            self.unacked_dropped += len(batch)

    # -- the loop's thread ----------------------------------------------------------------

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception as err:  # thread boundary: the source must say why it stopped
            log.exception("nats_source_crashed")
            # Without its source the daemon would run on, reading nothing: stop it instead
            # (systemd starts it again), as for a refusal retrying cannot fix.
            if self._fatal is None:
                self._fatal = f"the NATS source stopped: {err!r}"
                self._on_fatal(self._fatal)
        finally:
            self._connected.clear()
            self._subscribed.clear()
            # Paused by now, so a hand-off still running returns at its next offer.
            self._handoff.shutdown(wait=True, cancel_futures=True)
            loop.close()

    async def _main(self) -> None:
        self._resubscribe = asyncio.Event()
        self._stop_async = asyncio.Event()
        if self._stopping.is_set():
            return
        nc = await self._connect()
        if nc is None:
            return
        self._client = nc
        try:
            while not self._stop_async.is_set():
                if self._paused.is_set():
                    # Draining: recreating the consumers now would drop the drain's acks.
                    await self._stop_async.wait()
                elif not await self._consume_until_reconnect(nc):
                    await self._wait_stop(RETRY_DELAY)
        finally:
            await self._close(nc)

    async def _connect(self) -> NatsClient | None:
        cfg = self._config
        password = self._config.password
        creds = cfg.creds_file
        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": cfg.name,
            "connect_timeout": cfg.connect_timeout,
            "reconnect_time_wait": cfg.reconnect_wait,
            "max_reconnect_attempts": -1,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "tls": tls_context(cfg),
        }
        if cfg.username:
            options["user"] = cfg.username
            options["password"] = password.get_secret_value() if password else ""
        if creds is not None:
            options["user_credentials"] = str(creds)
        assert self._stop_async is not None
        while not self._stop_async.is_set():
            nc = NatsClient()
            # nats-py retries a first connection on its own: race it against the stop,
            # which a refusal of our credentials (``_on_error``) also sets.
            connecting = asyncio.ensure_future(nc.connect(**options))
            stopped = asyncio.ensure_future(self._stop_async.wait())
            await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                await nc.close()
                return None
            err = connecting.exception()
            if err is None:
                self.connects += 1
                self._connected.set()
                url = nc.connected_url
                log.info("nats_connected", server=url.netloc if url is not None else None)
                return nc
            if not isinstance(err, NatsError | OSError | TimeoutError):
                raise err
            if "authorization" in str(err).lower():
                if self._fatal is None:
                    self._fail(f"the NATS server refused our credentials: {err}")
                return None
            log.warning("nats_connect_failed", servers=cfg.servers, error=str(err))
            await self._wait_stop(cfg.reconnect_wait)
        return None

    async def _close(self, nc: NatsClient) -> None:
        # Acks already handed to the loop go out before the connection closes.
        if self._ack_tasks:
            await asyncio.wait(self._ack_tasks, timeout=2.0)
        try:
            if nc.is_connected:
                await nc.flush(timeout=2)
        except (NatsError, TimeoutError) as err:
            log.warning("nats_flush_failed", error=str(err))
        await nc.close()
        self._connected.clear()
        log.info("nats_closed", redelivered=self.redelivered, acks_dropped=self.unacked_dropped)

    async def _wait_stop(self, seconds: float) -> None:
        assert self._stop_async is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_async.wait(), seconds)

    def _fail(self, reason: str) -> None:
        log.error("nats_refused_fatal", reason=reason)
        self._fatal = reason
        self._on_fatal(reason)

    # -- consumers --------------------------------------------------------------------------

    async def _consume_until_reconnect(self, nc: NatsClient) -> bool:
        """Recreate the consumers and read them until a reconnect or the stop; False when
        the setup failed (retried after a pause)."""
        assert self._resubscribe is not None
        assert self._stop_async is not None
        self._resubscribe.clear()
        self._acked = asyncio.Event()
        # From here on, acks of what was handed before name consumers about to be replaced:
        # they are dropped. One reaching a new consumer could move its ack floor past
        # messages it has not acked (the server takes the floor from the ack's sequences).
        self._epoch += 1
        self._unacked.clear()
        js = nc.jetstream()
        try:
            if self._ack_tasks:  # acks already on their way go to the old consumers
                await asyncio.wait(self._ack_tasks)
            await nc.flush(timeout=5)
            await self._ensure_stream(js)
            self._js = js
            # Until every wanted partition is open: one acquired meanwhile (between two
            # awaits) is opened here, not by _acquire, which waits for the setup's end.
            while missing := sorted(self._wanted - set(self._subs)):
                # One listing of the stream's consumers for all of them (up to 1,024).
                listing = await _consumers(js, self._config.stream)
                for partition in missing:
                    await self._open(partition, listing)
        except (NatsError, TimeoutError) as err:
            log.warning("nats_setup_failed", error=str(err) or type(err).__name__)
            await self._close_all()
            return False
        self._subscribed.set()
        log.info("nats_subscribed", partitions=self.partitions, epoch=self._epoch)
        waits = [
            asyncio.create_task(self._resubscribe.wait()),
            asyncio.create_task(self._stop_async.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._subscribed.clear()
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            await self._close_all()
        return True

    async def _open(self, partition: int, listing: list[ConsumerInfo] | None = None) -> None:
        """Recreate ``partition``'s consumer at its ack floor and start reading it."""
        assert self._js is not None
        sub = await self._reset_consumer(self._js, partition, listing)
        if partition not in self._wanted:  # released while its consumer was being set up
            with contextlib.suppress(NatsError, TimeoutError):
                await sub.unsubscribe()
            return
        self._subs[partition] = sub
        halted = self._halted[partition] = threading.Event()
        task = asyncio.create_task(self._read(partition, sub, halted))
        self._readers[partition] = task
        task.add_done_callback(self._reader_done)

    async def _close_partition(self, partition: int) -> None:
        """Stop reading ``partition``: its reader ends, what it fetched and did not hand
        is forgotten (``_hand``), and its subscription goes (its consumer stays, for the next
        reader: this daemon's after a reconnect or another daemon's)."""
        halted = self._halted.pop(partition, None)
        if halted is not None:
            halted.set()
        task = self._readers.pop(partition, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sub = self._subs.pop(partition, None)
        if sub is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                await sub.unsubscribe()

    async def _close_all(self) -> None:
        for partition in list(self._subs):
            await self._close_partition(partition)
        self._js = None

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        # A reader that failed otherwise than by NATS errors (which it retries) is a bug:
        # stop the source, as the single loop did before partitions could move.
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        log.error("nats_reader_crashed", error=repr(err))
        if self._fatal is None:
            self._fatal = f"the NATS source stopped: {err!r}"
            self._on_fatal(self._fatal)
        if self._stop_async is not None:
            self._stop_async.set()

    async def _acquire(self, partition: int) -> bool:
        if partition in self._wanted:
            return True
        self._wanted.add(partition)
        if not self._subscribed.is_set():
            return True  # the (re)connection's setup opens it
        try:
            await self._open(partition)
        except (NatsError, TimeoutError) as err:
            log.warning(
                "nats_acquire_failed", partition=partition, error=str(err) or type(err).__name__
            )
            self._wanted.discard(partition)
            await self._close_partition(partition)
            return False
        log.info("nats_partition_acquired", partition=partition, partitions=self.partitions)
        return True

    async def _release(self, partition: int, timeout: float, keep: bool) -> bool:
        if partition not in self._wanted:
            return True
        self._wanted.discard(partition)
        await self._close_partition(partition)
        deadline = time.monotonic() + timeout
        assert self._acked is not None
        while self._inflight_count[partition] > 0:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                log.warning(
                    "nats_release_timed_out",
                    partition=partition,
                    inflight=self._inflight_count[partition],
                    timeout=timeout,
                )
                # Keep it: read again from the ack floor, dropping the acks still to
                # come for it (their messages come again and are recognised).
                for token in [t for t, p in self._inflight.items() if p == partition]:
                    self._forget(token)
                if not keep:
                    return False
                self._wanted.add(partition)
                if self._js is not None and self._subscribed.is_set():
                    with contextlib.suppress(NatsError, TimeoutError):
                        await self._open(partition)
                return False
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), min(left, 1.0))
        # Its acks reach the server before the next owner reads the ack floor.
        if self._ack_tasks:
            await asyncio.wait(self._ack_tasks, timeout=5.0)
        nc = self._client
        if nc is not None and nc.is_connected:
            with contextlib.suppress(NatsError, TimeoutError):
                await nc.flush(timeout=5)
        log.info("nats_partition_released", partition=partition, partitions=self.partitions)
        return True

    def _forget(self, token: int) -> None:
        """A delivery whose ack will not come (never handed, or given up on)."""
        self._unacked.pop(token, None)
        partition = self._inflight.pop(token, None)
        if partition is not None:
            self._inflight_count[partition] -= 1

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        cfg = self._config
        subjects = f"{cfg.subject_prefix}.*.>"
        try:
            info = await js.stream_info(cfg.stream)
        except NotFoundError:
            if not cfg.create_stream:
                raise
            await js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=[subjects],
                    storage=StorageType.FILE,
                    max_age=cfg.max_age,
                )
            )
            log.info("nats_stream_created", stream=cfg.stream, subjects=[subjects])
            return
        if subjects not in (info.config.subjects or []):
            log.warning(
                "nats_stream_subjects_differ",
                stream=cfg.stream,
                subjects=info.config.subjects,
                expected=subjects,
            )

    async def _reset_consumer(
        self,
        js: JetStreamContext,
        partition: int,
        listing: list[ConsumerInfo] | None = None,
    ) -> JetStreamContext.PullSubscription:
        """Give the partition a new durable consumer at its ack floor (see the module's
        docstring) and delete its earlier ones.

        Each consumer has a name of its own (``<consumer_prefix>-p<p>-<n>``): a pull names
        its consumer, so a daemon that lost the partition without knowing it yet would
        otherwise go on fetching from the new owner's consumer, taking messages the new
        owner then gets only after ``ack_wait``, behind newer ones, and drops as out of
        order. Its pulls at a deleted consumer get nothing. The floor is the highest of the
        earlier consumers' (everything up to any consumer's floor was acknowledged, so
        committed); JetStream 2.9 cannot rewind a consumer, hence a new one. ``listing``:
        the stream's consumers, when the caller just listed them.
        """
        cfg = self._config
        base = f"{cfg.consumer_prefix}-p{partition}"
        subject = f"{cfg.subject_prefix}.{partition}.>"
        if listing is None:
            listing = await _consumers(js, cfg.stream)
        earlier = [c for c in listing if _reads(c, base, subject)]
        start = max((_floor(c) for c in earlier), default=0) + 1
        # Milliseconds keep the names apart across daemons and restarts, and in order.
        number = max([time.time_ns() // 1_000_000, *(_number(c.name, base) + 1 for c in earlier)])
        durable = f"{base}-{number}"
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait,
            max_ack_pending=self._max_ack_pending,
            max_deliver=-1,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
            opt_start_seq=start if start > 1 else None,
        )
        await js.add_consumer(cfg.stream, config)
        # Created first: a daemon stopped in between leaves two, and the next reset takes
        # the higher floor of them and deletes both.
        for consumer in earlier:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(cfg.stream, consumer.name)
        self._consumer_names[partition] = durable
        log.debug(
            "nats_consumer_ready",
            consumer=durable,
            start_seq=start,
            replaced=[c.name for c in earlier],
        )
        return await js.pull_subscribe_bind(durable=durable, stream=cfg.stream)

    async def _consumer_gone(self, partition: int) -> bool:
        """Whether the partition's consumer was deleted: by a daemon that took the
        partition (this one will be told to release it) or by hand."""
        js, durable = self._js, self._consumer_names.get(partition)
        if js is None or durable is None:
            return False
        try:
            await js.consumer_info(self._config.stream, durable)
        except NotFoundError:
            return True
        except (NatsError, TimeoutError):
            return False  # a reconnect, if that is what it is, recreates it anyway
        return False

    async def _read(
        self, partition: int, sub: JetStreamContext.PullSubscription, halted: threading.Event
    ) -> None:
        prefix = f"{self._config.subject_prefix}.{partition}."
        checked = time.monotonic()
        while not self._paused.is_set() and not halted.is_set():
            self.pulls[partition] += 1
            try:
                msgs = await sub.fetch(self._config.fetch_batch, timeout=FETCH_WAIT)
            except TimeoutError:  # nats-py raises its own and asyncio's: nothing to read
                # Pulls at a deleted consumer get nothing either: look now and then.
                if time.monotonic() - checked >= CONSUMER_CHECK:
                    checked = time.monotonic()
                    if await self._consumer_gone(partition):
                        sub = await self._reopen(partition, sub, halted)
                continue
            except NatsError as err:
                # Disconnected or a slow server: a reconnect recreates the consumers.
                level = log.warning if self._connected.is_set() else log.debug
                level("nats_fetch_failed", partition=partition, error=str(err) or repr(err))
                await self._wait_stop(FETCH_WAIT)
                continue
            if not await self._hand(msgs, prefix, partition, halted):
                return  # paused or released: the rest stays unacknowledged, to come again

    async def _reopen(
        self,
        partition: int,
        sub: JetStreamContext.PullSubscription,
        halted: threading.Event,
    ) -> JetStreamContext.PullSubscription:
        """The partition's consumer was deleted while this daemon still reads it: give it
        a new one at the floor. Another daemon that took the partition deleted it, and
        this one is told to release the partition within a look or two of the cluster
        (``[cluster] interval``, well under ``CONSUMER_CHECK``); until then each reader's
        uncommitted work comes again to the other and is recognised. Deleted by hand, it
        is simply back."""
        log.warning(
            "nats_consumer_gone", partition=partition, consumer=self._consumer_names.get(partition)
        )
        if halted.is_set() or self._js is None or partition not in self._wanted:
            return sub
        try:
            fresh = await self._reset_consumer(self._js, partition)
        except (NatsError, TimeoutError) as err:
            log.warning("nats_reopen_failed", partition=partition, error=str(err) or repr(err))
            return sub
        with contextlib.suppress(NatsError, TimeoutError):
            await sub.unsubscribe()
        if self._subs.get(partition) is sub:
            self._subs[partition] = fresh
        return fresh

    async def _hand(
        self, msgs: list[Msg], prefix: str, partition: int, halted: threading.Event
    ) -> bool:
        """Parse a fetched batch and hand it to the sink in order; False when paused or
        released.

        The sink may block for room, so it is called on the hand-off thread while this
        loop goes on sending acks and pings; meanwhile the messages not yet handed are
        reported in progress every ``ack_wait``/3, so JetStream does not redeliver them
        behind newer ones. One call per batch keeps the thread hop off the per-message cost.
        """
        deliveries = [self._delivery(msg, prefix, partition) for msg in msgs]
        handed = [0]  # how many the sink took; written by the hand-off thread
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._handoff, self._offer_all, deliveries, handed, halted)
        every = self._config.ack_wait / 3
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=every)
                if done:
                    break
                await self._in_progress(msgs[handed[0] :])
        except asyncio.CancelledError:
            # The partition closes: stop the hand-off at its next offer (within
            # SINK_STEP) and forget what it did not hand, then go.
            halted.set()
            await asyncio.wait({future})
            self._forget_unhanded(deliveries, handed[0])
            raise
        if future.result():
            return True
        self._forget_unhanded(deliveries, handed[0])
        return False

    def _forget_unhanded(self, deliveries: list[Delivery], handed: int) -> None:
        for delivery in deliveries[handed:]:
            if delivery.ack is not None:
                self._forget(delivery.ack.token)

    def _delivery(self, msg: Msg, prefix: str, partition: int) -> Delivery:
        topic = subject_to_topic(msg.subject.removeprefix(prefix))
        now = time.time()
        try:
            readings, rejected = self._parser.parse(topic, msg.data, now)
        except Exception as err:  # loop boundary: the parser should never raise
            log.exception("parser_crashed", topic=topic)
            readings, rejected = (
                [],
                [Rejected(RejectReason.UNPARSABLE, topic, f"parser error: {err!r}")],
            )
        if msg.metadata.num_delivered > 1:
            self.redelivered += 1
        self._next_token += 1
        self._unacked[self._next_token] = msg
        self._inflight[self._next_token] = partition
        self._inflight_count[partition] += 1
        return Delivery(
            topic=topic,
            readings=tuple(readings),
            rejected=tuple(rejected),
            ack=Ack(self._next_token, self._epoch, partition),
            received_at=now,
        )

    def _offer_all(
        self, deliveries: list[Delivery], handed: list[int], halted: threading.Event
    ) -> bool:
        """On the hand-off thread: offer each delivery in turn, waiting for room; False
        when paused or released first."""
        for delivery in deliveries:
            while True:
                if self._paused.is_set() or halted.is_set():
                    return False
                if self._sink(delivery, SINK_STEP):
                    break
            handed[0] += 1
        return True

    async def _in_progress(self, msgs: Sequence[Msg]) -> None:
        self.progress_reports += 1
        try:
            for msg in msgs:
                await msg.in_progress()
        except NatsError as err:  # redelivered then, and recognised as a duplicate
            log.debug("nats_in_progress_failed", error=str(err))

    # -- acks and connection callbacks (on the loop) ---------------------------------------

    def abandon(self, acks: Iterable[Ack]) -> None:
        """Acks that will never come, their writes fenced off (sentinel.cluster.fence):
        a release stops waiting for them; the messages go to the partition's new owner."""
        batch = list(acks)
        loop = self._loop
        if not batch or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(self._abandon_on_loop, batch)

    def _abandon_on_loop(self, acks: list[Ack]) -> None:
        for ack in acks:
            self._forget(ack.token)
        if self._acked is not None:
            self._acked.set()

    def _ack_on_loop(self, acks: list[Ack]) -> None:
        msgs = []
        for ack in acks:
            partition = self._inflight.pop(ack.token, None)
            if partition is not None:
                self._inflight_count[partition] -= 1
            msg = self._unacked.pop(ack.token, None) if ack.epoch == self._epoch else None
            if msg is None:
                # The consumer was recreated since: the message comes again and the
                # duplicate check recognises it.
                self.unacked_dropped += 1
                continue
            msgs.append(msg)
        if msgs:
            task = asyncio.ensure_future(self._send_acks(msgs))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)
        if self._acked is not None:
            self._acked.set()

    async def _send_acks(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                await msg.ack()
            except NatsError as err:  # sent again by the redelivery, recognised then
                log.warning("nats_ack_failed", error=str(err))
                return

    async def _on_error(self, err: Exception) -> None:
        reason = None
        if "authorization" in str(err).lower():
            reason = f"the NATS server refused our credentials: {err}"
        elif isinstance(err, ssl.SSLCertVerificationError):
            # As for MQTT: a certificate that does not verify will not verify next time.
            ca = self._config.tls.ca_file or "the system's CAs"
            reason = (
                f"the NATS server's certificate does not verify against {ca}: "
                f"{err.verify_message or err}"
            )
        if reason is None:
            log.warning("nats_error", error=str(err) or type(err).__name__)
            return
        if self._fatal is None:
            self._fail(reason)
        if self._stop_async is not None:
            self._stop_async.set()

    async def _on_disconnected(self) -> None:
        if self._connected.is_set():
            level = log.info if self._stopping.is_set() else log.warning
            level("nats_disconnected")
        self._connected.clear()

    async def _on_reconnected(self) -> None:
        self.connects += 1
        self._connected.set()
        log.info("nats_reconnected")
        if self._resubscribe is not None:
            self._resubscribe.set()  # recreate the consumers: see the module's docstring


class ListingUnreadable(NatsError):
    """The server's list of a stream's consumers could not be parsed."""


async def _consumers(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """Every consumer of ``stream`` (the server lists them 256 at a time).

    Just after a server restart, while JetStream is still restoring the stream's
    consumers, a listing can hold null entries, and nats-py fails on them with an
    ``AttributeError`` of its own (seen in CI: two daemons in a cluster, one stopped with
    "the NATS source stopped" and the other took its partitions). That is a setup that
    failed, not a crash: it raises ``ListingUnreadable``, a ``nats.errors.Error``, and the
    setup is tried again after ``RETRY_DELAY`` as for any other error of a server not ready.
    """
    found: list[ConsumerInfo] = []
    while True:
        try:
            page = await js.consumers_info(stream, offset=len(found) or None)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ListingUnreadable(
                f"the consumers of {stream} could not be read: {type(err).__name__}: {err}"
            ) from err
        found.extend(page)
        if len(page) < CONSUMER_PAGE:
            return found


def _reads(consumer: ConsumerInfo, base: str, subject: str) -> bool:
    """Whether ``consumer`` is one of a partition's: named ``base`` (before each had its
    own name) or ``base-<n>``, on the partition's subject."""
    name = consumer.name
    if name != base and not (name.startswith(base + "-") and name[len(base) + 1 :].isdigit()):
        return False
    return consumer.config.filter_subject in (None, subject)


def _number(name: str, base: str) -> int:
    return int(name[len(base) + 1 :]) if name != base else 0


def _floor(consumer: ConsumerInfo) -> int:
    """The stream sequence up to which everything ``consumer`` reads was acknowledged. A
    consumer with no ack yet reports 0: its start is the floor it was created at."""
    acked = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    start = consumer.config.opt_start_seq or 1
    return max(acked, start - 1)
