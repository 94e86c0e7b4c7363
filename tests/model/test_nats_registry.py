"""The shared model registry against a real private nats-server (issue #24): what one client
activates, another reads, fetches and is told of; a client started without NATS serves its
local cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs

from sentinel.config import NatsConfig, RegistryConfig
from sentinel.errors import ModelError, RegistryUnavailable
from sentinel.model import ModelRegistry
from sentinel.model.nats_registry import Activation, NatsRegistry
from sentinel.model.registry import load_active_or_previous
from simulators.nats_server import PrivateNats
from tests.e2e_helpers import wait_for
from tests.model.helpers import V1, V2, make_detector

pytestmark = pytest.mark.integration

V3 = "20250103T000000Z-333333"
CPU = torch.device("cpu")


def _registry(server: PrivateNats, cache: Path, **registry: object) -> NatsRegistry:
    nats = NatsConfig(servers=[server.url], connect_timeout=2, reconnect_wait=0.2)
    return NatsRegistry(RegistryConfig.model_validate({"timeout": 5, **registry}), nats, cache)


@pytest.fixture
def pair(private_nats: PrivateNats, tmp_path: Path) -> Iterator[tuple[NatsRegistry, NatsRegistry]]:
    """Two clients of one registry, each with its own cache: two daemons."""
    a, b = _registry(private_nats, tmp_path / "a"), _registry(private_nats, tmp_path / "b")
    assert a.start()
    assert b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _next(registry: NatsRegistry, version: str) -> Activation:
    """The first activation of ``version`` the watch reports (earlier ones are skipped)."""
    seen: list[Activation] = []

    def arrived() -> bool:
        activation = registry.next_activation(timeout=0.2)
        if activation is not None:
            seen.append(activation)
        return any(a.version == version for a in seen)

    wait_for(arrived, 30, f"the activation of {version}")
    return next(a for a in seen if a.version == version)


def test_a_version_saved_on_one_loads_on_another(
    pair: tuple[NatsRegistry, NatsRegistry],
) -> None:
    a, b = pair
    a.save(make_detector(V1))
    a.activate("pump", V1)

    assert b.active_version("pump") == V1
    assert b.versions("pump") == [V1]
    assert not (b.root / "pump" / V1).exists()  # nothing fetched before it is needed
    detector = b.load_active("pump", CPU)
    assert detector is not None
    assert detector.version == V1
    # Fetched into b's cache byte for byte, and b's ACTIVE follows the shared key.
    assert _files(b.root / "pump" / V1) == _files(a.root / "pump" / V1)
    assert ModelRegistry(b.root).active_version("pump") == V1


def test_two_clients_see_the_same_active_version_history_and_status(
    pair: tuple[NatsRegistry, NatsRegistry],
) -> None:
    a, b = pair
    for version in (V1, V2):
        a.save(make_detector(version))
    a.activate("pump", V1)
    b.activate("pump", V2, reason="retrain: schedule")  # b fetches V2 from the store first
    a.write_status("pump", V2, {"status": "accepted", "parent": V1})

    for client in (a, b):
        assert client.active_version("pump") == V2
        assert [e["version"] for e in client.history("pump")] == [V1, V2]
        assert client.history("pump")[-1]["reason"] == "retrain: schedule"
        assert client.previous_version("pump") == V1
        assert client.status("pump", V2) == {"status": "accepted", "parent": V1}
    assert a.active_version("other") is None
    with pytest.raises(ModelError, match="no model version"):
        b.activate("pump", V3)


def test_an_activation_on_one_reaches_a_watcher_on_the_other(
    pair: tuple[NatsRegistry, NatsRegistry],
) -> None:
    a, b = pair
    a.save(make_detector(V1))
    a.activate("pump", V1)
    b.watch()
    first = _next(b, V1)  # the current value, delivered when the watch starts
    assert (first.stream, first.reason, first.instance) == ("pump", "manual", a.instance)

    a.save(make_detector(V2))
    a.activate("pump", V2, reason="manual: models activate")
    change = _next(b, V2)
    assert change.reason == "manual: models activate"
    assert change.by == a.by


def test_the_watch_resumes_after_a_server_restart(
    private_nats: PrivateNats, pair: tuple[NatsRegistry, NatsRegistry]
) -> None:
    a, b = pair
    a.save(make_detector(V1))
    a.activate("pump", V1)
    b.watch()
    _next(b, V1)

    private_nats.restart()  # forgets the watch's ephemeral consumer
    a.save(make_detector(V2))  # the upload may be refused while a reconnects: retried below

    def activated() -> bool:
        try:
            a.activate("pump", V2)
        except RegistryUnavailable:
            return False
        return True

    wait_for(activated, 30, "a to reconnect and activate")
    assert _next(b, V2).version == V2


def test_a_start_without_nats_serves_the_cache(private_nats: PrivateNats, tmp_path: Path) -> None:
    a = _registry(private_nats, tmp_path / "a")
    assert a.start()
    try:
        a.save(make_detector(V1))
        a.activate("pump", V1)
    finally:
        a.stop()
    private_nats.stop()

    offline = _registry(private_nats, tmp_path / "a")
    assert not offline.start(wait=0.5)
    try:
        assert offline.active_version("pump") == V1
        assert offline.versions("pump") == [V1]
        detector = load_active_or_previous(offline, "pump", CPU, 64)
        assert detector is not None
        assert detector.version == V1
        with pytest.raises(RegistryUnavailable):
            offline.activate("pump", V1)
    finally:
        offline.stop()


def test_prune_keeps_the_active_version_and_its_predecessor(
    pair: tuple[NatsRegistry, NatsRegistry],
) -> None:
    a, b = pair
    for version in (V1, V2, V3):
        a.save(make_detector(version))
    a.activate("pump", V2)
    a.activate("pump", V3)

    assert b.prune("pump", keep=2) == [V1]
    assert b.versions("pump") == [V2, V3]  # a still caches V1 until it prunes itself
    assert b.prune("pump", keep=1) == []  # V3 active, V2 its predecessor


def test_a_torn_cached_copy_is_fetched_again(pair: tuple[NatsRegistry, NatsRegistry]) -> None:
    """A power cut that tears b's cached files must not make every daemon fall back."""
    a, b = pair
    a.save(make_detector(V1))
    a.activate("pump", V1)
    assert b.load_version("pump", V1, CPU).version == V1
    cached = b.root / "pump" / V1
    for path in cached.iterdir():
        path.write_bytes(path.read_bytes()[:10])  # every file cut short

    with capture_logs() as logs:
        detector = load_active_or_previous(b, "pump", CPU, 64)
    assert detector is not None
    assert detector.version == V1
    assert [e["version"] for e in logs if e["event"] == "model_cache_unusable"] == [V1]
    assert _files(cached) == _files(a.root / "pump" / V1)
    assert a.active_version("pump") == V1  # no fallback reached the others


def test_a_daemon_moving_over_shares_its_active_version_once(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """Two daemons with file registries of their own switch to the shared one: the first
    to start shares its active version, the second finds one and keeps it."""
    for name, version in (("a", V1), ("b", V2)):
        files = ModelRegistry(tmp_path / name)
        files.save(make_detector(version))
        files.activate("pump", version)
    a, b = _registry(private_nats, tmp_path / "a"), _registry(private_nats, tmp_path / "b")
    assert a.start()
    assert b.start()
    try:
        assert a.share_cached("pump") == V1
        assert b.share_cached("pump") is None
        assert b.active_version("pump") == V1
        assert b.versions("pump") == [V1, V2]  # V2 only in b's cache, not uploaded
        assert a.versions("pump") == [V1]
        b.activate("pump", V2)  # uploads it
        assert a.versions("pump") == [V1, V2]
        assert a.active_version("pump") == V2
    finally:
        a.stop()
        b.stop()
