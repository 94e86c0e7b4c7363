"""The retraining lease against a real private nats-server (issue #24): of two contenders one
wins; a released lease is free at once; a holder that stops renewing loses it one TTL later,
and finds out at its next renewal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.config import NatsConfig, RegistryConfig
from sentinel.natslink import NatsLink
from sentinel.retrain.lease import NatsLease
from simulators.nats_server import PrivateNats
from tests.e2e_helpers import wait_for

pytestmark = pytest.mark.integration

TTL = 1.0  # the shortest the config allows: the takeover test waits about this long


@pytest.fixture
def contenders(private_nats: PrivateNats, tmp_path: Path) -> Iterator[tuple[NatsLease, NatsLease]]:
    """Two daemons' leases, each on its own connection, with the same connection name."""
    config = RegistryConfig(lease_ttl=TTL, timeout=5)
    nats = NatsConfig(servers=[private_nats.url], name="sentinel-test", reconnect_wait=0.2)
    links = [NatsLink(nats, role="lease") for _ in range(2)]
    for link in links:
        assert link.start(5.0)
    try:
        yield NatsLease(links[0], config, nats.name), NatsLease(links[1], config, nats.name)
    finally:
        for link in links:
            link.stop()


def test_one_of_two_contenders_holds_the_lease(contenders: tuple[NatsLease, NatsLease]) -> None:
    first, second = contenders
    assert first.holder != second.holder
    assert first.acquire("pump")
    assert not second.acquire("pump")
    assert first.renew("pump")
    assert not second.renew("pump")  # never held it
    assert first.holder_of("pump") == first.holder
    assert second.acquire("flow")  # leases are per stream

    first.release("pump")
    assert second.acquire("pump")
    assert not first.acquire("pump")
    assert second.holder_of("pump") == second.holder


def test_a_holder_that_stops_renewing_loses_the_lease_after_its_ttl(
    contenders: tuple[NatsLease, NatsLease],
) -> None:
    holder, other = contenders
    assert holder.acquire("pump")
    assert not other.acquire("pump")

    # The holder "dies": no renewals. The bucket's max_age removes its entry.
    wait_for(lambda: other.acquire("pump"), 30, "the lease to expire and be taken")
    assert other.holder_of("pump") == other.holder
    # The old holder's next renewal sees someone else's revision: lost, not renewed.
    assert not holder.renew("pump")
    assert other.renew("pump")
    assert other.holder_of("pump") == other.holder


def test_a_renewed_lease_outlives_its_ttl(contenders: tuple[NatsLease, NatsLease]) -> None:
    holder, other = contenders
    assert holder.acquire("pump")
    renewals = 0

    def renewed_past_ttl() -> bool:
        nonlocal renewals
        assert holder.renew("pump")
        renewals += 1
        return renewals * holder.renew_every > 3 * TTL

    wait_for(renewed_past_ttl, 30, "renewals over three TTLs", poll=holder.renew_every)
    assert not other.acquire("pump")
    assert holder.holder_of("pump") == holder.holder


def test_a_finished_run_is_seen_by_every_daemon(contenders: tuple[NatsLease, NatsLease]) -> None:
    first, second = contenders
    assert second.last_run("pump") is None
    before = time.time()
    first.record_run("pump", "accepted")
    last = second.last_run("pump")
    assert last is not None
    assert before <= last <= time.time()
    assert first.last_run("flow") is None
