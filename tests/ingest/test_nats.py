"""The NATS JetStream source: subjects and mappings (unit), and against a real nats-server:
partitions keep each device's order, unacknowledged messages come again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import nats
import pytest
from pydantic import ValidationError

from sentinel.config import NatsConfig, SentinelConfig, StreamConfig
from sentinel.ingest.nats import NatsSource
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.subjects import (
    device_partition,
    server_mappings,
    subject_to_topic,
    topic_to_subject,
)
from sentinel.records import Delivery
from simulators.nats_server import PrivateNats
from tests.e2e_helpers import wait_for
from tests.nats_helpers import (
    PARTITIONS,
    device_names,
    nats_daemon_config,
    payload,
    publish,
)


def _stream(topic: str, name: str = "s") -> StreamConfig:
    return StreamConfig.model_validate({"name": name, "topic": topic, "features": ["x"]})


def test_topic_patterns_become_subjects_as_nats_mqtt_listener_maps_them() -> None:
    assert topic_to_subject("plant/{device}/pump") == "plant.*.pump"
    assert topic_to_subject("a/+/{device}/#") == "a.*.*.>"
    assert subject_to_topic("plant.pump-7.pump") == "plant/pump-7/pump"


def test_mappings_partition_by_the_device_level_only() -> None:
    config = NatsConfig(partitions=8, subject_prefix="sx")
    found = server_mappings(config, [_stream("site/+/{device}/data")])
    assert found == {
        "site.*.*.data": "sx.{{partition(8,2)}}.site.{{wildcard(1)}}.{{wildcard(2)}}.data"
    }


def test_a_trailing_hash_also_maps_the_topic_without_it() -> None:
    found = server_mappings(NatsConfig(partitions=2), [_stream("p/{device}/#")])
    assert found == {
        "p.*.>": "sentinel.{{partition(2,1)}}.p.{{wildcard(1)}}.>",
        "p.*": "sentinel.{{partition(2,1)}}.p.{{wildcard(1)}}",
    }


def test_nats_config_is_validated() -> None:
    assert NatsConfig(partitions=3).owned == (0, 1, 2)
    assert NatsConfig(partitions=3, consume=[2, 0]).owned == (0, 2)
    bad_configs: list[dict[str, object]] = [
        {"partitions": 2, "consume": [2]},
        {"consume": [1, 1]},
        {"consume": []},
        {"stream": "a.b"},
        {"servers": ["localhost:4222"]},
        {"partitions": 0},
    ]
    for bad in bad_configs:
        with pytest.raises(ValidationError):
            NatsConfig.model_validate(bad)


def test_mqtt_stays_the_default_source() -> None:
    config = SentinelConfig.model_validate(
        {"streams": [{"name": "s", "topic": "a/{device}", "features": ["x"]}]}
    )
    assert config.ingest.source == "mqtt"


# -- against a real nats-server ---------------------------------------------------------


class Collector:
    """A sink that keeps every delivery and can refuse (a full queue)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()

    def __call__(self, delivery: Delivery, timeout: float) -> bool:
        if not self.open.wait(timeout):
            return False
        with self.lock:
            self.deliveries.append(delivery)
        return True

    def readings(self) -> int:
        with self.lock:
            return sum(len(d.readings) for d in self.deliveries)


@contextmanager
def running_source(
    server: PrivateNats,
    sink: Collector,
    state: Path,
    partitions: tuple[int, ...] | None = None,
    **nats_settings: Any,
) -> Iterator[NatsSource]:
    config = SentinelConfig.model_validate(nats_daemon_config(state, server, nats=nats_settings))
    source = NatsSource(
        config.nats,
        parser=MessageParser(config.streams, max_payload_bytes=65_536),
        sink=sink,
        max_ack_pending=1000,
        on_fatal=lambda reason: pytest.fail(reason),
        partitions=partitions,
    )
    source.start()
    try:
        assert source.wait_subscribed(30), "the source did not set up its consumers"
        yield source
    finally:
        source.stop()


def _by_device(deliveries: list[Delivery]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for delivery in deliveries:
        for reading in delivery.readings:
            found.setdefault(reading.device, []).append(reading.ts)
    return found


@pytest.mark.integration
def test_partitions_keep_each_devices_order(private_nats: PrivateNats, tmp_path: Path) -> None:
    devices = device_names(12)
    sent = publish(private_nats, devices, range(50))
    sink = Collector()
    with running_source(private_nats, sink, tmp_path) as source:
        wait_for(lambda: sink.readings() >= sent, 30, "every reading delivered")
        source.ack(d.ack for d in sink.deliveries if d.ack is not None)
    assert not [r for d in sink.deliveries for r in d.rejected]
    by_device = _by_device(sink.deliveries)
    assert set(by_device) == set(devices)
    for device, stamps in by_device.items():
        assert stamps == sorted(stamps), f"{device}: out of order"
        assert len(stamps) == 50
    # The mapping spread the devices over the partitions (12 devices, 4 partitions).
    info = _consumers(private_nats)
    bases = {name.rsplit("-", 1)[0] for name in info}
    assert bases == {f"sentinel-p{p}" for p in range(PARTITIONS)}
    assert len(info) == PARTITIONS  # one each: the earlier ones are deleted
    assert sum(1 for delivered in info.values() if delivered > 0) > 1
    assert sum(info.values()) == sent


@pytest.mark.integration
def test_unacknowledged_messages_come_again_in_order_after_a_restart(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """Acked up to a point, then the source goes away: a new one gets everything after the
    ack floor again, in order (recreated consumers), not after ``ack_wait`` behind newer."""
    devices = device_names(4)
    sent = publish(private_nats, devices, range(30))
    first = Collector()
    with running_source(private_nats, first, tmp_path) as source:
        wait_for(lambda: first.readings() >= sent, 30, "every reading delivered")
        # Only each device's first ten readings were "committed".
        source.ack(
            d.ack for d in first.deliveries if d.ack is not None and d.readings[0].ts < _ts(10)
        )
    publish(private_nats, devices, range(30, 40))
    second = Collector()
    with running_source(private_nats, second, tmp_path):
        wait_for(lambda: second.readings() >= 4 * 30, 30, "the unacknowledged readings again")
    for device, stamps in _by_device(second.deliveries).items():
        assert stamps == sorted(stamps), f"{device}: out of order"
        assert stamps[0] == _ts(10), f"{device}: should start after what was acknowledged"
        assert stamps[-1] == _ts(39)


def _ts(i: int) -> float:
    return json.loads(payload(i))["ts"]  # type: ignore[no-any-return]


def _consumer_sum(server: PrivateNats, field: str) -> int:
    """A field of every consumer's info, added up."""

    async def run() -> int:
        nc = await nats.connect(server.url)
        try:
            infos = await nc.jetstream().consumers_info("SENTINEL")
            return sum(int(getattr(c, field) or 0) for c in infos)
        finally:
            await nc.close()

    return asyncio.run(run())


def _consumers(server: PrivateNats) -> dict[str, int]:
    """Each consumer's count of delivered messages (its consumer sequence)."""

    async def run() -> dict[str, int]:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            return {
                c.name: c.delivered.consumer_seq if c.delivered else 0
                for c in await js.consumers_info("SENTINEL")
            }
        finally:
            await nc.close()

    return asyncio.run(run())


def test_cli_prints_the_mappings_block_for_the_config(tmp_path: Path) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(
        '[ingest]\nsource = "nats"\n[nats]\npartitions = 4\n'
        '[[streams]]\nname = "pump"\ntopic = "plant/{device}/pump"\nfeatures = ["x"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "nats-mappings", str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert lines == [
        "mappings = {",
        '  "plant.*.pump": "sentinel.{{partition(4,1)}}.plant.{{wildcard(1)}}.pump"',
        "}",
    ]


@pytest.mark.integration
def test_a_full_queue_holds_the_partition_without_redeliveries(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """The sink refuses for several ack_waits: the messages waiting, the one being offered
    and the rest of its batch, are reported in progress, so JetStream redelivers none and
    each device's order holds."""
    devices = device_names(4)
    sent = publish(private_nats, devices, range(20))
    sink = Collector()
    sink.open.clear()
    with running_source(private_nats, sink, tmp_path, ack_wait=1.0) as source:
        wait_for(lambda: _consumer_sum(private_nats, "num_ack_pending") == sent, 30, "fetched")
        # Three ack_waits pass while the sink stays shut (each partition reports every third).
        wait_for(lambda: source.progress_reports >= 4 * 9, 60, "three ack_waits of waiting")
        sink.open.set()
        wait_for(lambda: sink.readings() >= sent, 30, "every reading delivered")
        assert sink.readings() == sent
        assert source.redelivered == 0
        source.ack(d.ack for d in sink.deliveries if d.ack is not None)
    for device, stamps in _by_device(sink.deliveries).items():
        assert stamps == sorted(stamps), f"{device}: out of order"
    assert _consumer_sum(private_nats, "num_redelivered") == 0


@pytest.mark.integration
def test_a_partition_is_released_only_once_acked_and_the_next_reader_starts_after(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """Partition hand-over at the source (issue #24): a release waits for everything handed
    to be acknowledged (kept on timeout), and another source acquiring the partition reads
    on from its ack floor."""
    devices = device_names(8)
    sent = publish(private_nats, devices, range(20))
    moving = device_partition("pump-0", PARTITIONS)
    first = Collector()
    with running_source(private_nats, first, tmp_path / "a") as source:
        wait_for(lambda: first.readings() >= sent, 30, "every reading delivered")
        others = [
            d.ack
            for d in first.deliveries
            if d.ack is not None and device_partition(d.readings[0].device, PARTITIONS) != moving
        ]
        source.ack(others)
        # Its own deliveries are not acknowledged yet: it keeps the partition, and reads it
        # again from the ack floor (the acks of the first copies will be dropped).
        assert not source.release(moving, timeout=1.0)
        assert moving in source.partitions
        in_it = [d for d in devices if device_partition(d, PARTITIONS) == moving]
        again = sent + 20 * len(in_it)
        wait_for(lambda: first.readings() >= again, 30, "the partition read again")
        source.ack(d.ack for d in first.deliveries if d.ack is not None)
        assert source.release(moving, timeout=30.0)
        assert moving not in source.partitions

        publish(private_nats, devices, range(20, 25))
        second = Collector()
        config = SentinelConfig.model_validate(nats_daemon_config(tmp_path / "b", private_nats))
        taker = NatsSource(
            config.nats,
            parser=MessageParser(config.streams, max_payload_bytes=65_536),
            sink=second,
            max_ack_pending=1000,
            on_fatal=lambda reason: pytest.fail(reason),
            partitions=(),
        )
        taker.start()
        try:
            assert taker.wait_subscribed(30)
            assert taker.acquire(moving)
            wait_for(lambda: second.readings() >= 5 * len(in_it), 30, "the new readings")
        finally:
            taker.stop()
    by_device = _by_device(second.deliveries)
    assert set(by_device) == set(in_it)
    for stamps in by_device.values():
        assert stamps == [_ts(i) for i in range(20, 25)]  # nothing acked came again


def _stamps_of(sink: Collector, devices: list[str]) -> dict[str, list[float]]:
    with sink.lock:
        found = _by_device(list(sink.deliveries))
    return {d: found.get(d, []) for d in devices}


@contextmanager
def _all_read_and_acked(
    server: PrivateNats, sink: Collector, state: Path, devices: list[str]
) -> Iterator[NatsSource]:
    """A source that has read steps 0-9 of ``devices`` into ``sink`` and acked them all."""
    sent = publish(server, devices, range(10))
    with running_source(server, sink, state) as source:
        wait_for(lambda: sink.readings() >= sent, 30, "every reading delivered")
        source.ack(d.ack for d in sink.deliveries if d.ack is not None)
        yield source


def _partition_of_pump_0(devices: list[str]) -> tuple[int, list[str]]:
    """The partition that moves in these tests, and the devices in it."""
    moving = device_partition("pump-0", PARTITIONS)
    return moving, [d for d in devices if device_partition(d, PARTITIONS) == moving]


def _each_has(sink: Collector, devices: list[str], count: int) -> bool:
    return all(len(s) >= count for s in _stamps_of(sink, devices).values())


def _delete_consumers(server: PrivateNats, partition: int) -> list[str]:
    """Delete every consumer of ``partition``, as an operator might; their names."""

    async def run() -> list[str]:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            names = [
                c.name
                for c in await js.consumers_info("SENTINEL")
                if c.config.filter_subject == f"sentinel.{partition}.>"
            ]
            for name in names:
                await js.delete_consumer("SENTINEL", name)
            return names
        finally:
            await nc.close()

    return asyncio.run(run())


@pytest.mark.integration
def test_a_reader_that_lost_its_partition_unknowingly_takes_nothing_from_the_next(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """A daemon whose cluster session ended goes on pulling until it learns so. Its pulls
    must not reach the new owner's consumer: a message it took there would come to the new
    owner only ``ack_wait`` later, behind newer ones, and be dropped as out of order (a
    CI run lost a reading that way). The new owner gets everything from the floor, in
    order, while the old one still runs."""
    devices = device_names(8)
    moving, in_it = _partition_of_pump_0(devices)
    sent = publish(private_nats, devices, range(10))
    stale, taker = Collector(), Collector()
    with running_source(private_nats, stale, tmp_path / "a") as old:
        wait_for(lambda: stale.readings() >= sent, 30, "every reading delivered")
        # Nothing of the moving partition was committed (acked) by the old reader.
        old.ack(
            d.ack
            for d in stale.deliveries
            if d.ack is not None and device_partition(d.readings[0].device, PARTITIONS) != moving
        )
        with running_source(private_nats, taker, tmp_path / "b", partitions=()) as new:
            assert new.acquire(moving)
            publish(private_nats, devices, range(10, 30))
            # ack_wait is 60 s: a stolen message would not come back in time.
            wait_for(partial(_each_has, taker, in_it, 30), 30, "every reading at the new owner")
            # One step at a time while the old reader goes on pulling (each of its pulls
            # waits FETCH_WAIT): with pulls of both waiting, the server would serve the
            # older one, the old reader's, were it at the same consumer.
            step, pulls = 30, old.pulls[moving]
            while old.pulls[moving] < pulls + 3:
                publish(private_nats, devices, range(step, step + 1))
                step += 1
                wait_for(partial(_each_has, taker, in_it, step), 30, f"step {step - 1}")
            assert moving in old.partitions
    for device, stamps in _stamps_of(taker, in_it).items():
        assert stamps == [_ts(i) for i in range(step)], device
    for device, stamps in _stamps_of(stale, in_it).items():
        assert stamps == [_ts(i) for i in range(10)], f"{device}: the old reader took some"


@pytest.mark.integration
def test_a_reader_whose_consumer_is_deleted_makes_a_new_one(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """Deleted by hand: an idle reader notices within CONSUMER_CHECK and reads on. With
    every consumer of the partition gone its floor is unknown, so the partition comes
    again from the stream's start, in order (the pipeline recognises what it counted):
    nothing is lost."""
    devices = device_names(8)
    moving, in_it = _partition_of_pump_0(devices)
    sink = Collector()
    with _all_read_and_acked(private_nats, sink, tmp_path, devices):
        assert _delete_consumers(private_nats, moving)
        publish(private_nats, devices, range(10, 15))
        wait_for(partial(_each_has, sink, in_it, 25), 60, "a new consumer, read on")
    for device, stamps in _stamps_of(sink, in_it).items():
        assert stamps == [_ts(i) for i in [*range(10), *range(15)]], device


@pytest.mark.integration
def test_a_partition_taken_twice_without_acks_is_not_read_from_the_beginning(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """A consumer with no ack yet reports an ack floor of 0: its start is its floor, or a
    partition handed on again before its first ack would be replayed from the stream's
    first message (every message of max_age)."""
    devices = device_names(8)
    moving, in_it = _partition_of_pump_0(devices)
    sink = Collector()
    with _all_read_and_acked(private_nats, sink, tmp_path, devices) as source:
        assert source.release(moving, timeout=30.0)
        assert source.acquire(moving)  # a new consumer at the floor, nothing to read
        assert source.release(moving, timeout=30.0)
        assert source.acquire(moving)
        publish(private_nats, devices, range(10, 12))
        wait_for(partial(_each_has, sink, in_it, 12), 30, "the new readings")
    # Stream order: anything replayed would have come before the new readings.
    for device, stamps in _stamps_of(sink, in_it).items():
        assert stamps == [_ts(i) for i in range(12)], device


def test_a_consumer_listing_nats_py_cannot_parse_is_a_setup_to_retry() -> None:
    """Just after a server restart a listing can hold a null consumer, which nats-py's own
    parser fails on with an AttributeError; that stopped a daemon in a cluster (CI). It is
    a NATS error now, which the setup retries after RETRY_DELAY."""
    from nats.errors import Error as NatsError
    from nats.js import api

    from sentinel.ingest.nats import ListingUnreadable, _consumers

    class RestoringServer:
        """A JetStream context whose listing holds a consumer the server has not restored:
        parsed by nats-py's own ``ConsumerInfo.from_response``, as ``consumers_info`` does."""

        async def consumers_info(self, stream: str, offset: int | None = None) -> list[Any]:
            return [api.ConsumerInfo.from_response(None)]  # type: ignore[arg-type]

    with pytest.raises(ListingUnreadable, match="consumers of SENTINEL could not be read") as err:
        asyncio.run(_consumers(RestoringServer(), "SENTINEL"))  # type: ignore[arg-type]
    assert isinstance(err.value, NatsError)
    assert isinstance(err.value.__cause__, AttributeError)
