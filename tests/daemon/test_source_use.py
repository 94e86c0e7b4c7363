"""The daemon speaks to the ``Source`` protocol, not to paho: a fake source of another
name shows up in health, metrics and stats under its own name, and gets the committed
acks in commit order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sentinel.config import SentinelConfig
from sentinel.daemon.app import SentinelApp
from sentinel.daemon.health import Health, Progress
from sentinel.daemon.metrics import Metrics, stats_dict
from sentinel.ingest.source import Source
from sentinel.records import Ack, WriteBatch
from sentinel.store import AlertStore, AlertWriter
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeSource


def _config(tmp_path: Path) -> SentinelConfig:
    return SentinelConfig.model_validate(
        {
            "state_dir": str(tmp_path),
            "streams": [{"name": "pump", "topic": "p/{device}", "features": ["x"]}],
        }
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(
        _config(tmp_path), sink=lambda batch: None, request_training=lambda job: None, models={}
    )
    pipeline.start()
    yield pipeline
    pipeline.stop()


def test_health_metrics_and_stats_name_the_source_they_are_given(pipeline: Pipeline) -> None:
    source = FakeSource()
    assert isinstance(source, Source)
    writer = AlertWriter(AlertStore("sqlite://"))
    health = Health()
    health.attach(pipeline, source, writer)
    health.phase = "running"
    progress = Progress(pipeline, source)

    report = health.report()
    assert "nats: not connected to the broker" in report.problems
    assert report.checks["nats"] == {"connected": False, "connects": 3}
    assert not progress.check()  # idle and cut off: the watchdog is not fed

    source.start()
    assert health.report().checks["nats"]["connected"] is True
    assert progress.check()  # idle with the source connected
    metrics = Metrics()
    metrics.attach(pipeline, source, writer)
    scraped = generate_latest(metrics.registry).decode()
    assert "sentinel_nats_connected 1.0" in scraped
    assert "sentinel_nats_connects_total 3.0" in scraped
    assert stats_dict(pipeline, source, writer)["nats_connected"] is True


def test_the_app_hands_committed_acks_to_its_source_in_commit_order(tmp_path: Path) -> None:
    app = SentinelApp(_config(tmp_path))
    source = app.source = FakeSource()
    app._committed(
        [
            WriteBatch(acks=(Ack(1, 1), Ack(2, 1))),
            WriteBatch(),
            WriteBatch(acks=(Ack(3, 2),)),
        ]
    )
    assert source.acked == [[Ack(1, 1), Ack(2, 1), Ack(3, 2)]]
