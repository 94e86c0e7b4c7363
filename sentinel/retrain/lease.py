"""The retraining lease: among daemons sharing a registry, one retrains a stream at a time.

Built on NATS key-value primitives only (issue #24): ``create`` writes a key only if it has
no value (a compare-and-set on revision 0), ``update`` only if its revision is still the one
we wrote. The lease bucket's ``max_age`` is ``[registry] lease_ttl``, so a value disappears
that long after its last write: a holder that died, hung or lost NATS stops renewing and its
lease is free for the others one TTL later. The holder renews every TTL/3 while its run
trains and once more before it publishes the new version; a renewal refused because someone
else holds the key now means the lease was lost (expired while this daemon was cut off),
and the run is abandoned: the new holder runs its own.

A renewal that fails only because NATS did not answer keeps the lease for as long as its
TTL can still be running (measured from the last renewal that succeeded), so that a short
outage does not throw away an hour of training.

The lease makes runs exclusive, not rare: every daemon keeps its own schedule, so N daemons
would each run once per period, one after the other. So each finished run is recorded
(``retrained.<stream>`` in the registry's key-value bucket, which has no TTL) and a
scheduled run that finds a run of its stream finished less than half a period ago skips
(``Retrainer``): one run per period across the daemons.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Protocol

import structlog
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from sentinel.config import RegistryConfig
from sentinel.errors import RegistryUnavailable
from sentinel.natslink import NatsLink

__all__ = ["Lease", "NatsLease"]

log = structlog.get_logger(__name__)

LEASE_KEY = "retrain.{stream}"
RAN_KEY = "retrained.{stream}"  # in the registry's kv_bucket: the last finished run


class Lease(Protocol):
    """Exclusive right to retrain a stream. ``renew_every``: seconds between renewals."""

    @property
    def renew_every(self) -> float: ...

    def acquire(self, stream: str) -> bool: ...

    def renew(self, stream: str) -> bool: ...

    def release(self, stream: str) -> None: ...

    def last_run(self, stream: str) -> float | None:
        """When any daemon last finished a run of ``stream`` (epoch seconds)."""

    def record_run(self, stream: str, status: str) -> None:
        """Record a finished run, for ``last_run`` on every daemon."""


class NatsLease:
    """Leases in the ``lease_bucket`` key-value bucket, one key per stream."""

    def __init__(self, link: NatsLink, config: RegistryConfig, name: str) -> None:
        self._link = link
        self._config = config
        # Unique per process: two daemons may share a host and a connection name.
        self.holder = f"{name}/{os.getpid()}/{secrets.token_hex(3)}"
        self._bucket: KeyValue | None = None
        self._runs: KeyValue | None = None
        self._held: dict[str, tuple[int, float]] = {}  # stream -> (revision, renewed at)

    @property
    def renew_every(self) -> float:
        return self._config.lease_ttl / 3

    async def _open(self, js: JetStreamContext) -> KeyValue:
        if self._bucket is None:
            cfg = self._config
            try:
                self._bucket = await js.key_value(cfg.lease_bucket)
            except BucketNotFoundError:
                self._bucket = await js.create_key_value(
                    bucket=cfg.lease_bucket,
                    history=1,
                    ttl=cfg.lease_ttl,
                    storage=StorageType.FILE,
                )
        return self._bucket

    def _value(self) -> bytes:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps({"holder": self.holder, "at": at}).encode()

    def acquire(self, stream: str) -> bool:
        """True when this daemon now holds the stream's lease (False: another does, or
        NATS cannot be reached: no retraining without the lease)."""
        key = LEASE_KEY.format(stream=stream)

        async def create(js: JetStreamContext) -> int | None:
            kv = await self._open(js)
            try:
                return await kv.create(key, self._value())
            except KeyWrongLastSequenceError:
                return None

        try:
            revision = self._link.call(create, self._config.timeout)
        except RegistryUnavailable as err:
            log.warning("retrain_lease_unavailable", stream=stream, error=str(err))
            return False
        if revision is None:
            return False
        self._held[stream] = (revision, time.monotonic())
        log.info("retrain_lease_acquired", stream=stream, holder=self.holder)
        return True

    def holder_of(self, stream: str) -> str | None:
        """Who holds the stream's lease now (None: nobody); for status and tests."""
        key = LEASE_KEY.format(stream=stream)

        async def get(js: JetStreamContext) -> str | None:
            kv = await self._open(js)
            try:
                entry = await kv.get(key)
            except NotFoundError:
                return None
            return str(json.loads(entry.value or b"{}").get("holder"))

        result: str | None = self._link.call(get, self._config.timeout)
        return result

    def renew(self, stream: str) -> bool:
        """Write the lease again (its TTL starts over); False once it is lost."""
        held = self._held.get(stream)
        if held is None:
            return False
        revision, renewed_at = held
        key = LEASE_KEY.format(stream=stream)

        async def update(js: JetStreamContext) -> int | None:
            kv = await self._open(js)
            try:
                return await kv.update(key, self._value(), last=revision)
            except KeyWrongLastSequenceError:
                return None

        try:
            new_revision = self._link.call(update, self._config.timeout)
        except RegistryUnavailable as err:
            alive = time.monotonic() - renewed_at < self._config.lease_ttl
            log.warning("retrain_lease_renewal_failed", stream=stream, error=str(err), kept=alive)
            if not alive:
                self._held.pop(stream, None)
            return alive
        if new_revision is None:
            self._held.pop(stream, None)
            log.warning("retrain_lease_lost", stream=stream, holder=self.holder)
            return False
        self._held[stream] = (new_revision, time.monotonic())
        return True

    def release(self, stream: str) -> None:
        """Give the lease up at once (the others need not wait for its TTL)."""
        held = self._held.pop(stream, None)
        if held is None:
            return
        key = LEASE_KEY.format(stream=stream)

        async def delete(js: JetStreamContext) -> None:
            kv = await self._open(js)
            # A wrong last revision (10071): expired, maybe taken: no longer ours to delete.
            with contextlib.suppress(BadRequestError, NotFoundError):
                await kv.delete(key, last=held[0])

        try:
            self._link.call(delete, self._config.timeout)
        except RegistryUnavailable as err:  # it expires on its own
            log.warning("retrain_lease_release_failed", stream=stream, error=str(err))
            return
        log.info("retrain_lease_released", stream=stream)

    # -- the last run of each stream, across daemons ------------------------------------

    async def _open_runs(self, js: JetStreamContext) -> KeyValue:
        if self._runs is None:
            # The registry's bucket, created as NatsRegistry creates it if it comes first.
            try:
                self._runs = await js.key_value(self._config.kv_bucket)
            except BucketNotFoundError:
                self._runs = await js.create_key_value(
                    bucket=self._config.kv_bucket, history=64, storage=StorageType.FILE
                )
        return self._runs

    def last_run(self, stream: str) -> float | None:
        key = RAN_KEY.format(stream=stream)

        async def get(js: JetStreamContext) -> float | None:
            kv = await self._open_runs(js)
            try:
                entry = await kv.get(key)
            except NotFoundError:
                return None
            try:
                at = json.loads(entry.value or b"{}").get("at")
            except ValueError:
                return None
            return float(at) if isinstance(at, int | float) else None

        try:
            result: float | None = self._link.call(get, self._config.timeout)
        except RegistryUnavailable as err:
            log.warning("retrain_last_run_unavailable", stream=stream, error=str(err))
            return None
        return result

    def record_run(self, stream: str, status: str) -> None:
        key = RAN_KEY.format(stream=stream)
        value = json.dumps({"at": time.time(), "by": self.holder, "status": status}).encode()

        async def put(js: JetStreamContext) -> None:
            kv = await self._open_runs(js)
            await kv.put(key, value)

        try:
            self._link.call(put, self._config.timeout)
        except RegistryUnavailable as err:  # the others may then run once more this period
            log.warning("retrain_run_record_failed", stream=stream, error=str(err))
