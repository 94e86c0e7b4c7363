"""Readings over NATS for the JetStream source's tests: the stream, the server's subject
mappings, a daemon config, and a publisher that waits for JetStream to store each message."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import NotFoundError

from sentinel.config import NatsConfig, StreamConfig
from sentinel.ingest.subjects import server_mappings
from simulators.nats_server import PrivateNats
from tests.e2e_helpers import NoBroker, daemon_config
from tests.tls_helpers import BROKER_NAME, BrokerPki

PARTITIONS = 4
TOPIC = "plant/{device}/pump"
FEATURES = ["x", "y"]
# Readings start this far in the past, one a second, so none is ahead of the daemon's clock.
EPOCH = time.time() - 86_400


def stream_mappings() -> dict[str, str]:
    stream = StreamConfig.model_validate({"name": "pump", "topic": TOPIC, "features": FEATURES})
    return server_mappings(NatsConfig(partitions=PARTITIONS), [stream])


def nats_daemon_config(
    state: Path, server: PrivateNats, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A daemon reading NATS, without a model (the cold start never completes) and
    without MQTT (publishing off)."""
    config = daemon_config(
        state,
        NoBroker(),
        database_url=f"sqlite:///{state / 'sentinel.db'}",
        ingest={"source": "nats"},
        nats={
            "servers": [server.url],
            "partitions": PARTITIONS,
            "ack_wait": 30,
            "reconnect_wait": 0.2,
            "name": "sentinel-test",
        },
        publish={"enabled": False},
        retrain={"enabled": False},
        cold_start={"readings": 1_000_000},
    )
    config["streams"] = [{"name": "pump", "topic": TOPIC, "features": FEATURES}]
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def payload(i: int) -> bytes:
    return json.dumps({"ts": EPOCH + i, "x": float(i % 7), "y": float(i % 5)}).encode()


def device_names(count: int) -> list[str]:
    return [f"pump-{d}" for d in range(count)]


async def _ensure_stream(js: JetStreamContext) -> None:
    """The stream the source would create, so readings published first are kept."""
    try:
        await js.stream_info("SENTINEL")
    except NotFoundError:
        await js.add_stream(name="SENTINEL", subjects=["sentinel.*.>"], storage=StorageType.FILE)


def publish_tls(server: PrivateNats, pki: BrokerPki, devices: list[str], steps: range) -> int:
    """``publish`` over the server's TLS listener, trusting the test CA."""
    context = ssl.create_default_context(cafile=str(pki.broker.ca_file))
    return publish(server, devices, steps, url=f"tls://{BROKER_NAME}:{server.port}", tls=context)


def publish(
    server: PrivateNats,
    devices: list[str],
    steps: range,
    *,
    url: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Publish step ``i`` of every device for each ``i`` in ``steps`` on NATS subjects,
    each stored by JetStream before the next (retrying through a server outage)."""

    async def run() -> int:
        nc = await nats.connect(
            url or server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, tls=tls
        )
        js = nc.jetstream(timeout=5)
        sent = 0
        try:
            await _ensure_stream(js)
            for i in steps:
                for device in devices:
                    deadline = time.monotonic() + 60
                    while True:
                        assert time.monotonic() < deadline, "JetStream stored nothing for 60 s"
                        try:
                            # The message id lets JetStream drop a copy stored by a retry.
                            await js.publish(
                                f"plant.{device}.pump",
                                payload(i),
                                headers={"Nats-Msg-Id": f"{device}-{i}"},
                            )
                            break
                        except (nats.errors.Error, TimeoutError):
                            await asyncio.sleep(0.2)  # the server is away: publish again
                    sent += 1
        finally:
            await nc.close()
        return sent

    return asyncio.run(run())
