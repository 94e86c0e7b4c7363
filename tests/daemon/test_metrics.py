"""Per-device Prometheus series stay bounded (issue #25); open alerts by stream; no
``_created`` samples; every family has its HELP."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.daemon.metrics import Metrics
from sentinel.store import AlertStore, AlertWriter
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, FakeSource, delivery, make_config

T0 = 1_700_000_040.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(metrics: Metrics) -> tuple[str, Samples]:
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def _run(max_devices: int) -> tuple[Pipeline, Metrics]:
    pipeline = Pipeline(
        make_config(),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": FakeDetector()},
    )
    metrics = Metrics(max_devices=max_devices)
    metrics.attach(pipeline, FakeSource(), AlertWriter(AlertStore("sqlite://")))
    # Three devices, 20 readings each; "b" spikes at the end, so its alert is still open.
    for t in range(20):
        pipeline.process(
            [
                delivery("a", T0 + t, 0.1),
                delivery("b", T0 + t, 9.0 if t >= 17 else 0.1),
                delivery("c", T0 + t, 0.2),
            ]
        )
    return pipeline, metrics


def _device(name: str, device: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("device", device), ("stream", "pump")))


def test_devices_beyond_the_cap_count_in_their_streams_aggregate() -> None:
    pipeline, metrics = _run(max_devices=2)
    text, samples = _scrape(metrics)
    windows = {k: v for k, v in samples.items() if k[0] == "sentinel_device_windows_total"}
    # Windows of 4 readings, hop 1: 17 per device; "c" came third, beyond the cap of 2.
    assert windows == {
        _device("sentinel_device_windows_total", "a"): 17,
        _device("sentinel_device_windows_total", "b"): 17,
        _device("sentinel_device_windows_total", ""): 17,
    }
    assert samples[_device("sentinel_device_windows_anomalous_total", "b")] == 3
    assert samples[_device("sentinel_device_windows_anomalous_total", "a")] == 0
    assert samples[_device("sentinel_device_windows_anomalous_total", "")] == 0
    assert samples[_device("sentinel_device_score", "b")] == 9.0
    assert samples[_device("sentinel_device_score_ratio", "b")] == 6.0  # 9 / 1.5
    assert _device("sentinel_device_score", "c") not in samples
    assert _device("sentinel_device_score", "") not in samples
    assert samples[("sentinel_alerts_open", (("stream", "pump"),))] == 1
    assert samples[("sentinel_devices_learning", (("stream", "pump"),))] == 0
    assert samples[("sentinel_history_pruned_rows_total", ())] == 0
    assert pipeline.stats.anomalous == 3

    # No _created series, and every family says what it is.
    assert "_created" not in text
    families = list(text_string_to_metric_families(text))
    assert families
    assert all(f.documentation for f in families), [f.name for f in families if not f.documentation]


def test_a_cap_of_zero_keeps_only_the_aggregates() -> None:
    _, metrics = _run(max_devices=0)
    _, samples = _scrape(metrics)
    per_device = {k for k in samples if k[0].startswith("sentinel_device_")}
    assert per_device == {
        _device("sentinel_device_windows_total", ""),
        _device("sentinel_device_windows_anomalous_total", ""),
    }
    assert samples[_device("sentinel_device_windows_total", "")] == 51
