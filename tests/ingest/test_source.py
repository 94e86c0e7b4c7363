"""The source protocol's contract, without a broker: the MQTT source satisfies it, and the
pipeline's ``offer`` is the sink it expects (the wait is the source's to size)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.config import MqttConfig, SentinelConfig, StreamConfig
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.parse import MessageParser
from sentinel.ingest.source import Source, SourceStatus
from sentinel.records import Ack, Delivery
from sentinel.worker.pipeline import Pipeline

STREAM = StreamConfig.model_validate(
    {"name": "pump", "topic": "plant/{device}/pump", "features": ["flow"]}
)


def _mqtt_source(sink: list[tuple[Delivery, float]], keepalive: int = 30) -> MqttSource:
    def accept(delivery: Delivery, timeout: float) -> bool:
        sink.append((delivery, timeout))
        return True

    return MqttSource(
        MqttConfig.model_validate({"keepalive": keepalive, "client_id": "contract"}),
        [STREAM],
        parser=MessageParser([STREAM], max_payload_bytes=1024),
        sink=accept,
        receive_maximum=100,
        on_fatal=lambda reason: None,
    )


def test_the_mqtt_source_is_a_source_and_reports_its_status_by_name() -> None:
    source = _mqtt_source([])  # the constructor does no I/O
    assert isinstance(source, Source)
    assert source.status() == SourceStatus(name="mqtt", connected=False, connects=0)
    source.ack([Ack(token=1, epoch=0)])  # not connected: dropped, for the broker to resend
    assert source.unacked_dropped == 1


def test_the_mqtt_source_hands_its_sink_the_packet_id_and_a_third_of_its_keepalive() -> None:
    """The pipeline reads no MQTT config: how long paho's thread may wait for room comes
    with each delivery, from the source that knows its keep-alive."""
    seen: list[tuple[Delivery, float]] = []
    source = _mqtt_source(seen, keepalive=45)
    message = mqtt.MQTTMessage(mid=7, topic=b"plant/p1/pump")
    message.payload = b'{"ts": 1700000000, "flow": 2.5}'
    message.qos = 1
    source._on_message(mqtt.Client(CallbackAPIVersion.VERSION2), None, message)
    [(delivery, timeout)] = seen
    assert delivery.ack == Ack(token=7, epoch=0)
    assert delivery.readings[0].values == (2.5,)
    assert timeout == 15.0


def _delivery(ack: Ack | None) -> Delivery:
    return Delivery(topic="p/a", readings=(), rejected=(), ack=ack, received_at=time.time())


def test_the_pipeline_offer_waits_the_sources_timeout_then_refuses() -> None:
    config = SentinelConfig.model_validate(
        {
            "streams": [{"name": "pump", "topic": "p/{device}", "features": ["x"]}],
            "ingest": {"queue_size": 10},
        }
    )
    pipeline = Pipeline(
        config, sink=lambda batch: None, request_training=lambda job: None, models={}
    )  # not started: nothing drains the queue
    for _ in range(10):
        assert pipeline.offer(_delivery(None), 0.0)
    assert not pipeline.offer(_delivery(None), 60.0)  # nothing to acknowledge: never waits
    started = time.monotonic()
    assert not pipeline.offer(_delivery(Ack(token=1, epoch=1)), 0.2)
    assert time.monotonic() - started >= 0.2
    assert pipeline.queue_full == 2
