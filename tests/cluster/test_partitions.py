"""``device_partition`` computes the partition the real nats-server's ``partition(P, i)``
mapping gives a device: the daemon relies on it to let go of a partition's devices."""

from __future__ import annotations

import asyncio

import nats
import pytest

from sentinel.ingest.subjects import device_partition
from simulators.nats_server import PrivateNats
from tests.nats_helpers import PARTITIONS

pytestmark = pytest.mark.integration


def test_device_partition_matches_the_servers_mapping(private_nats: PrivateNats) -> None:
    devices = [f"pump-{i}" for i in range(64)] + ["a", "Zz_9-x", "ünïcode"]

    async def run() -> dict[str, int]:
        nc = await nats.connect(private_nats.url)
        sub = await nc.subscribe("sentinel.*.>")
        for device in devices:
            await nc.publish(f"plant.{device}.pump", b"{}")
        found: dict[str, int] = {}
        try:
            while len(found) < len(devices):
                msg = await sub.next_msg(timeout=10)
                tokens = msg.subject.split(".")
                found[tokens[3]] = int(tokens[1])
        finally:
            await nc.close()
        return found

    found = asyncio.run(run())
    assert found == {d: device_partition(d, PARTITIONS) for d in devices}
    assert len(set(found.values())) == PARTITIONS  # the sample reaches every partition
