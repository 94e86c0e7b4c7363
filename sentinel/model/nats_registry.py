"""One model registry for many daemons: model files in a NATS JetStream object store, the
active version of each stream in a NATS key-value bucket (issue #24).

What lives where (bucket names from ``[registry]``):

* object store ``models_bucket``: ``<stream>/<version>.tar``, one tar of the version's
  directory (weights and ``meta.json``, as ``ModelRegistry`` saves it);
* key-value ``kv_bucket``: ``active.<stream>`` = ``{"version", "reason", "at", "by"}``,
  whose key history (64 entries) is the activation history that rollback reads, and
  ``status.<stream>.<version>`` = the retraining verdict (``status.json``).

Every daemon keeps a ``ModelRegistry`` under ``<state_dir>/models`` as its local cache:
versions it loads are fetched there first, and its ``ACTIVE`` file follows the shared key.
A daemon started while NATS is unreachable reads that cache (the last version it knew), and
catches up once NATS answers (``watch``). Reads fall back to the cache; writes that others
must see (activations, status) raise ``RegistryUnavailable`` instead.

nats-server 2.9 has both stores (object store since 2.6.2, key-value since 2.6); nothing
here needs 2.10 (no per-key TTL, no subject transforms on streams).
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import secrets
import shutil
import tarfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from sentinel.config import NatsConfig, RegistryConfig
from sentinel.errors import ModelError, RegistryUnavailable
from sentinel.model.base import Detector
from sentinel.model.registry import STATUS_FILE, ModelRegistry
from sentinel.natslink import NatsLink

if TYPE_CHECKING:
    import torch

__all__ = ["Activation", "NatsRegistry"]

log = structlog.get_logger(__name__)

KV_HISTORY = 64  # activations kept per stream (JetStream's most per subject)
ACTIVE_KEY = "active.{stream}"
STATUS_KEY = "status.{stream}.{version}"


@dataclass(frozen=True, slots=True)
class Activation:
    """A stream's shared active version changed (or was first seen by this daemon)."""

    stream: str
    version: str
    reason: str
    by: str  # the connection name of the daemon or CLI that activated it
    instance: str  # the registry object (process) that activated it: see ``instance``


def _object_name(stream: str, version: str) -> str:
    return f"{stream}/{version}.tar"


def _pack(directory: Path) -> bytes:
    """The version's files, without its status (which lives in the key-value bucket)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.name != STATUS_FILE:
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


def _unpack(data: bytes, target: Path) -> None:
    """Extract into a hidden sibling and rename it into place, so a reader never sees a
    half-written version (``ModelRegistry.versions`` skips dot-directories)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".fetch-{target.name}-{secrets.token_hex(3)}"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(scratch, filter="data")  # no links, no paths out of scratch
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent fetch of the same version
                raise
    except (OSError, tarfile.TarError) as err:
        raise ModelError(f"{target}: cannot unpack the fetched version: {err}") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class NatsRegistry:
    """The ``Registry`` (``sentinel.model.registry``) on NATS, with a local cache.

    Constructor does no I/O; ``start()`` connects (waiting at most ``connect_timeout``),
    ``stop()``. ``watch()`` starts following the active keys; ``next_activation`` hands
    each change to the caller's thread (``sentinel.daemon.follow``).
    """

    def __init__(
        self,
        config: RegistryConfig,
        nats: NatsConfig,
        cache_dir: Path,
        *,
        role: str = "registry",
    ) -> None:
        self._config = config
        self._nats = nats
        self._local = ModelRegistry(cache_dir)
        self.link = NatsLink(nats, role=role)
        self._buckets: tuple[KeyValue, ObjectStore] | None = None
        self._activations: queue.Queue[Activation] = queue.Queue()
        self._mirror_lock = threading.Lock()
        self._watching = False
        self.by = f"{nats.name}-{role}"[:64]
        # Tells this process's own activations apart from another's that shares its
        # connection name: what we activated, we have installed already.
        self.instance = secrets.token_hex(6)

    @property
    def root(self) -> Path:
        return self._local.root

    @property
    def local(self) -> ModelRegistry:
        """The cache: what this daemon has fetched, and its last known active versions."""
        return self._local

    def start(self, wait: float | None = None) -> bool:
        """Connect; True when NATS answered within ``wait`` (default: connect_timeout).
        Without it the registry serves its cache and keeps trying."""
        return self.link.start(self._nats.connect_timeout if wait is None else wait)

    def stop(self, timeout: float = 5.0) -> None:
        self.link.stop(timeout)

    # -- NATS ---------------------------------------------------------------------------

    async def _open(self, js: JetStreamContext) -> tuple[KeyValue, ObjectStore]:
        """The two buckets, created (file storage) by whichever daemon comes first; the
        same config twice is no error for JetStream."""
        if self._buckets is None:
            cfg = self._config
            try:
                kv = await js.key_value(cfg.kv_bucket)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=cfg.kv_bucket, history=KV_HISTORY, storage=StorageType.FILE
                )
            try:
                store = await js.object_store(cfg.models_bucket)
            except BucketNotFoundError:
                store = await js.create_object_store(cfg.models_bucket, storage=StorageType.FILE)
            self._buckets = (kv, store)
        return self._buckets

    async def _get(self, js: JetStreamContext, key: str) -> dict[str, Any] | None:
        kv, _ = await self._open(js)
        try:
            entry = await kv.get(key)
        except NotFoundError:  # never written, deleted or purged
            return None
        return _decode(entry.value)

    async def _put(self, js: JetStreamContext, key: str, value: dict[str, Any]) -> None:
        kv, _ = await self._open(js)
        await kv.put(key, json.dumps(value, allow_nan=False).encode())

    def _call(self, fn: Any) -> Any:
        return self.link.call(fn, self._config.timeout)

    # -- reading ------------------------------------------------------------------------

    def path(self, stream: str, version: str) -> Path:
        """The version's directory in the cache, fetched first when it is not there yet
        (left missing when NATS does not have it or cannot be reached)."""
        path = self._local.path(stream, version)
        if not path.is_dir():
            try:
                self._fetch(stream, version)
            except RegistryUnavailable as err:
                log.warning(
                    "registry_fetch_unavailable", stream=stream, version=version, error=str(err)
                )
        return path

    def _fetch(self, stream: str, version: str) -> bool:
        name = _object_name(stream, version)

        async def get(js: JetStreamContext) -> bytes | None:
            _, store = await self._open(js)
            try:
                result = await store.get(name)
            except NotFoundError:
                return None
            return result.data

        data: bytes | None = self._call(get)
        if data is None:
            return False
        _unpack(data, self._local.path(stream, version))
        log.info("model_fetched", stream=stream, version=version, bytes=len(data))
        return True

    def active_version(self, stream: str) -> str | None:
        """The shared active version; the cache's when NATS cannot be reached."""
        key = ACTIVE_KEY.format(stream=stream)
        self._local.path(stream, "x")  # checks the stream name
        try:
            value = self._call(lambda js: self._get(js, key))
        except RegistryUnavailable as err:
            log.warning("registry_unavailable_using_cache", stream=stream, error=str(err))
            return self._local.active_version(stream)
        if value is None:
            return None
        version = value.get("version")
        if not isinstance(version, str):
            raise ModelError(f"registry key {key}: no version in {value!r}")
        return version

    def load_version(
        self, stream: str, version: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector:
        """Load from the cache, fetched first if missing. A cached copy that does not load
        (torn by a power cut) is fetched again once, before the version counts as broken:
        falling back to the predecessor would switch every daemon, not only this one."""
        path = self.path(stream, version)
        try:
            return self._local.load_version(stream, version, device, max_batch)
        except ModelError as err:
            if not path.is_dir() or not self.link.connected:
                raise  # nothing cached, or nothing to replace the broken copy with
            log.warning("model_cache_unusable", stream=stream, version=version, error=str(err))
            shutil.rmtree(path, ignore_errors=True)
            try:
                fetched = self._fetch(stream, version)
            except RegistryUnavailable:
                fetched = False
            if not fetched:
                raise
        return self._local.load_version(stream, version, device, max_batch)

    def load_active(
        self, stream: str, device: torch.device | None, max_batch: int = 512
    ) -> Detector | None:
        version = self.active_version(stream)
        if version is None:
            return None
        if not self.path(stream, version).is_dir():
            raise ModelError(f"active version {version!r} of {stream!r} is not in the registry")
        detector = self.load_version(stream, version, device, max_batch)
        self.mirror(stream, version, "registry")
        return detector

    def versions(self, stream: str) -> list[str]:
        """Versions in the object store and in the cache (one saved here and not uploaded
        yet, e.g. before a daemon first shares its models), oldest first; the cache's alone
        when NATS is away."""
        prefix = f"{stream}/"
        self._local.path(stream, "x")

        async def listing(js: JetStreamContext) -> list[tuple[str, float]]:
            _, store = await self._open(js)
            try:
                infos = await store.list(ignore_deletes=True)
            except NotFoundError:
                return []
            found = []
            for info in infos:
                name = info.name or ""
                if name.startswith(prefix) and name.endswith(".tar") and not info.deleted:
                    mtime = info.mtime
                    stamp = mtime.timestamp() if isinstance(mtime, datetime) else 0.0
                    found.append((name[len(prefix) : -len(".tar")], stamp))
            return found

        try:
            found: list[tuple[str, float]] = self._call(listing)
        except RegistryUnavailable as err:
            log.warning("registry_unavailable_using_cache", stream=stream, error=str(err))
            return self._local.versions(stream)
        shared = {v for v, _ in found}
        for version in self._local.versions(stream):
            if version not in shared:
                found.append((version, self._local.path(stream, version).stat().st_mtime))
        found.sort(key=lambda v: (v[0].split("-", 1)[0], v[1], v[0]))
        return [v for v, _ in found]

    def share_cached(self, stream: str) -> str | None:
        """A daemon moving to the shared registry: when the stream has no shared active
        version yet, publish and activate the one its cache (its old registry) names.
        Created only if still absent (compare-and-set), so daemons starting together do
        not overwrite each other. Returns the version shared, if any."""
        try:
            version = self._local.active_version(stream)
        except ModelError:
            return None
        if version is None or not self._local.path(stream, version).is_dir():
            return None
        key = ACTIVE_KEY.format(stream=stream)
        if self.active_version(stream) is not None:
            return None
        self.publish(stream, version)
        value = {
            "version": version,
            "reason": "shared from the local registry",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": self.by,
            "instance": self.instance,
        }

        async def create(js: JetStreamContext) -> bool:
            kv, _ = await self._open(js)
            try:
                await kv.create(key, json.dumps(value).encode())
            except KeyWrongLastSequenceError:
                return False  # another daemon shared its own first
            return True

        if not self._call(create):
            return None
        log.info("registry_shared_cached_version", stream=stream, version=version)
        return version

    def status(self, stream: str, version: str) -> dict[str, Any]:
        key = STATUS_KEY.format(stream=stream, version=version)
        self._local.path(stream, version)
        try:
            value = self._call(lambda js: self._get(js, key))
        except RegistryUnavailable:
            return self._local.status(stream, version)
        return value if value is not None else self._local.status(stream, version)

    def history(self, stream: str) -> list[dict[str, str]]:
        """Activations, oldest first: the history of the stream's active key."""
        key = ACTIVE_KEY.format(stream=stream)
        self._local.path(stream, "x")

        async def entries(js: JetStreamContext) -> list[dict[str, Any]]:
            kv, _ = await self._open(js)
            try:
                found = await kv.history(key)
            except NoKeysError:
                return []
            values = [_decode(e.value) for e in found if e.operation is None]
            return [v for v in values if v is not None]

        try:
            values: list[dict[str, Any]] = self._call(entries)
        except RegistryUnavailable:
            return self._local.history(stream)
        return [
            {k: str(v) for k, v in value.items()}
            for value in values
            if isinstance(value.get("version"), str)
        ]

    def previous_version(self, stream: str) -> str | None:
        """The version active before the current one, as ``ModelRegistry`` finds it."""
        history = [e["version"] for e in self.history(stream)]
        current = self.active_version(stream)
        existing = set(self.versions(stream))
        for i in range(len(history) - 1, -1, -1):
            if history[i] == current:
                for earlier in reversed(history[:i]):
                    if earlier != current and earlier in existing:
                        return earlier
                return None
        return None

    # -- writing ------------------------------------------------------------------------

    def save(self, detector: Detector) -> Path:
        """Save into the cache and upload; an upload that fails is retried at activation."""
        path = self._local.save(detector)
        try:
            self.publish(detector.meta.stream, detector.version)
        except RegistryUnavailable as err:
            log.warning("registry_upload_deferred", version=detector.version, error=str(err))
        return path

    def publish(self, stream: str, version: str) -> None:
        """Upload a version from the cache (its files once, its status every time)."""
        directory = self._local.path(stream, version)
        if not directory.is_dir():
            raise ModelError(f"{directory}: no such model version of stream {stream!r}")
        name = _object_name(stream, version)
        status = self._local.status(stream, version)

        async def upload(js: JetStreamContext) -> bool:
            _, store = await self._open(js)
            try:
                await store.get_info(name)
                uploaded = False
            except NotFoundError:
                await store.put(name, _pack(directory))
                uploaded = True
            if status:
                await self._put(js, STATUS_KEY.format(stream=stream, version=version), status)
            return uploaded

        if self._call(upload):
            log.info("model_uploaded", stream=stream, version=version)

    def activate(self, stream: str, version: str, reason: str = "manual") -> None:
        """Make ``version`` the active one of every daemon: upload it if this daemon has
        it and the store does not, then write the stream's active key."""
        local = self._local.path(stream, version)
        if local.is_dir():
            self.publish(stream, version)
        elif not self._fetch(stream, version):
            raise ModelError(f"no model version {version!r} of stream {stream!r} in the registry")
        value = {
            "version": version,
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": self.by,
            "instance": self.instance,
        }
        self._call(lambda js: self._put(js, ACTIVE_KEY.format(stream=stream), value))
        log.info("model_activated_shared", stream=stream, version=version, reason=reason)
        try:
            self.mirror(stream, version, reason)
        except ModelError as err:
            # Active everywhere already: failing now would have the caller refuse a version
            # the other daemons run. The cache's pointer is fixed at the next activation.
            log.warning("model_cache_pointer_failed", stream=stream, error=str(err))

    def mirror(self, stream: str, version: str, reason: str) -> None:
        """Point the cache's ACTIVE at ``version``, for a start without NATS. Serialised:
        the follower and an activation may mirror at once, and the file registry's
        temporary file is named per process, not per thread."""
        with self._mirror_lock:
            try:
                if self._local.active_version(stream) == version:
                    return
            except ModelError:
                pass  # a damaged cache pointer: rewrite it
            self._local.activate(stream, version, reason=reason)

    def write_status(self, stream: str, version: str, status: dict[str, Any]) -> None:
        if self._local.path(stream, version).is_dir():
            self._local.write_status(stream, version, status)
        key = STATUS_KEY.format(stream=stream, version=version)
        self._call(lambda js: self._put(js, key, status))

    def prune(self, stream: str, keep: int) -> list[str]:
        """Delete the oldest shared versions beyond ``keep`` (never the active one or its
        predecessor), then the cache's. Several daemons may prune at once: deleting what
        another already deleted is no error."""
        try:
            protected = {self.active_version(stream), self.previous_version(stream)}
            versions = self.versions(stream)
        except ModelError:
            return self._local.prune(stream, keep)
        doomed = [v for v in versions if v not in protected][: max(0, len(versions) - keep)]

        async def delete(js: JetStreamContext) -> None:
            kv, store = await self._open(js)
            for version in doomed:
                with contextlib.suppress(NotFoundError):
                    await store.delete(_object_name(stream, version))
                with contextlib.suppress(NotFoundError):
                    await kv.delete(STATUS_KEY.format(stream=stream, version=version))

        if doomed:
            try:
                self._call(delete)
            except RegistryUnavailable as err:
                log.warning("registry_prune_failed", stream=stream, error=str(err))
                doomed = []
            else:
                log.info("models_pruned_shared", stream=stream, removed=doomed, kept=keep)
        for version in doomed:
            shutil.rmtree(self._local.path(stream, version), ignore_errors=True)
        self._local.prune(stream, keep)
        return doomed

    # -- following the active keys ------------------------------------------------------

    def watch(self) -> None:
        """Follow every stream's active key from now on: each change (and, at the start
        and after every reconnection, each key's current value) comes out of
        ``next_activation``."""
        if not self._watching:
            self._watching = True
            self.link.spawn(self._watch())

    def next_activation(self, timeout: float) -> Activation | None:
        """The next change seen by ``watch``, or None after ``timeout`` seconds."""
        try:
            return self._activations.get(timeout=timeout)
        except queue.Empty:
            return None

    async def _watch(self) -> None:
        link = self.link
        while True:
            nc = await link.client()
            if nc is None:
                return
            generation = link.generation
            try:
                kv, _ = await self._open(nc.jetstream(timeout=self._config.timeout))
                watcher = await kv.watch(ACTIVE_KEY.format(stream=">"))
            except (NatsError, TimeoutError) as err:
                log.warning("registry_watch_failed", error=str(err) or type(err).__name__)
                if await link.wait_stop(1.0):
                    return
                continue
            log.info("registry_watching", generation=generation)
            try:
                # A server restart forgets the watch's consumer: start again after every
                # reconnection, which also delivers each key's current value again.
                while link.generation == generation:
                    try:
                        entry = await watcher.updates(timeout=1.0)
                    except NatsTimeoutError:
                        continue
                    if entry is None or entry.operation is not None:
                        continue  # the end of the initial values, or a deletion
                    self._queue(entry.key, entry.value)
            finally:
                try:
                    await watcher.stop()
                except (NatsError, TimeoutError) as err:
                    log.debug("registry_watch_stop_failed", error=str(err))

    def _queue(self, key: str, raw: bytes | None) -> None:
        stream = key.removeprefix(ACTIVE_KEY.format(stream=""))
        value = _decode(raw)
        version = value.get("version") if value else None
        if not isinstance(version, str) or value is None:
            log.warning("registry_value_ignored", key=key, value=(raw or b"")[:200])
            return
        self._activations.put(
            Activation(
                stream=stream,
                version=version,
                reason=str(value.get("reason", "")),
                by=str(value.get("by", "")),
                instance=str(value.get("instance", "")),
            )
        )
