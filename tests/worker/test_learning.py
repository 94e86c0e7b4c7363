"""A device that joins a stream which already has its model learns for its first
``cold_start.span`` seconds, judged with alerts suppressed, as the stream's first devices
did before the model (issue #21); a device the store knows, or one warmed with the model,
is judged from its first window; one still learning at a restart goes on learning."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs

from sentinel.records import DeviceProgress, Reading
from sentinel.retrain.reservoir import Reservoir, ReservoirTap
from sentinel.worker.devices import Recall
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, Harness, delivery, make_config

SPAN = 600.0


def spiky(start: int, end: int, spike_at: int) -> list:  # type: ignore[type-arg]
    """Readings every second; one spike at ``spike_at``, which the fake model alerts on."""
    return [delivery("a", float(t), 9.0 if t == spike_at else 0.1) for t in range(start, end)]


def empty_store(stream: str, devices: object) -> dict[tuple[str, str], DeviceProgress]:
    return {}  # a daemon's store that has never seen the device


def harness(**kw: object) -> Harness:
    config = make_config(cold_start={"readings": 64, "span": SPAN})
    return Harness({"pump": FakeDetector()}, config, **{"recall": empty_store, **kw})


def test_a_device_that_joins_learns_for_the_span_then_alerts() -> None:
    h = harness()
    with capture_logs() as logs:
        h.batches.append(h.pipeline.process(spiky(0, 300, spike_at=100)))  # inside its first 600 s
        assert h.alerts == []
        assert h.pipeline.stats.learning_windows > 0
        h.batches.append(h.pipeline.process(spiky(300, 760, spike_at=700)))  # after them
    assert h.alerts, "the spike after the span raised no alert"
    assert min(a.started_at for a in h.alerts) >= 600
    events = [e["event"] for e in logs if e["event"].startswith("device_")]
    assert events == ["device_learning", "device_learnt"]


def test_a_device_the_store_knows_is_judged_from_its_first_window() -> None:
    stored = {("pump", "a"): DeviceProgress("pump", "a", -1.0, 5000)}
    h = harness(recall=lambda stream, devices: {k: v for k, v in stored.items() if k[1] in devices})
    h.batches.append(h.pipeline.process(spiky(0, 300, spike_at=100)))
    assert h.alerts, "a known device's spike raised no alert"
    assert h.pipeline.stats.learning_windows == 0


def test_a_device_warmed_with_the_model_is_judged_from_its_first_window() -> None:
    h = harness()
    h.pipeline.warm_up("pump", [Reading("pump", "a", float(t), (0.1, 0.0)) for t in range(-300, 0)])
    h.batches.append(h.pipeline.process(spiky(0, 300, spike_at=100)))
    assert h.alerts, "a warmed device's spike raised no alert"
    assert h.pipeline.stats.learning_windows == 0


def test_without_a_store_no_device_is_new() -> None:
    # replay, a harness: nothing tells a new device from a known one
    h = Harness({"pump": FakeDetector()}, make_config(cold_start={"readings": 64, "span": SPAN}))
    h.batches.append(h.pipeline.process(spiky(0, 300, spike_at=100)))
    assert h.alerts
    assert h.pipeline.stats.learning_windows == 0


def test_span_zero_judges_a_joining_device_at_once() -> None:
    config = make_config(cold_start={"readings": 64, "span": 0})
    h = Harness({"pump": FakeDetector()}, config, recall=empty_store)
    h.batches.append(h.pipeline.process(spiky(0, 300, spike_at=100)))
    assert h.alerts
    assert h.pipeline.stats.learning_windows == 0


def test_a_device_still_learning_goes_on_learning_after_a_restart(tmp_path: Path) -> None:
    snapshot = tmp_path / "thresholds.json"
    config = make_config(cold_start={"readings": 64, "span": SPAN})

    def pipeline(recall: Recall) -> Pipeline:
        return Pipeline(
            config,
            sink=lambda batch: None,
            request_training=lambda job: None,
            models={"pump": FakeDetector()},
            snapshot_path=snapshot,
            recall=recall,
        )

    first = pipeline(empty_store)
    first.start()
    for t in range(200):
        assert first.offer(delivery("a", float(t), 0.1))
    first.stop()  # saves the snapshot
    assert json.loads(snapshot.read_text())["streams"]["pump"]["joining"] == {"a": 0.0}
    # The restart: the database knows "a" now, and the snapshot that it is still learning.
    stored = {("pump", "a"): DeviceProgress("pump", "a", 199.0, 200)}
    second = pipeline(lambda stream, devices: {k: v for k, v in stored.items() if k[1] in devices})
    batch = second.process(spiky(200, 400, spike_at=300))  # 300 s: inside its first 600
    assert batch.alerts == ()
    assert second.stats.learning_windows > 0


def fleet(devices: int, start: int, end: int, spike: tuple[str, int] | None = None) -> list:  # type: ignore[type-arg]
    """``devices`` pumps read every second; one spike at (device, t) where given."""
    return [
        delivery(f"p{d}", float(t), 9.0 if spike == (f"p{d}", t) else 0.1)
        for t in range(start, end)
        for d in range(devices)
    ]


def test_a_fleet_whose_cold_start_max_readings_cut_short_learns_the_rest_of_the_span() -> None:
    # Ten pumps, max_readings 1,000: the cold start ends at their 100th second, short of the
    # 600 s span. The model arrives; each pump goes on learning, alerts suppressed, until
    # 600 s after its first reading, as a pump that joins after the model does.
    config = make_config(cold_start={"readings": 64, "span": SPAN, "max_readings": 1000})
    h = Harness({"pump": None}, config, recall=empty_store)
    h.batches.append(h.pipeline.process(fleet(10, 0, 100)))
    [job] = h.jobs
    assert job.readings == 1000
    h.pipeline.install_model("pump", FakeDetector())
    with capture_logs() as logs:
        h.batches.append(h.pipeline.process(fleet(10, 100, 400, spike=("p3", 300))))
        assert h.alerts == [], "a spike inside the span alerted"
        assert h.pipeline.stats.learning_windows > 0
        assert h.pipeline.learning_devices() == {"pump": 10}  # /healthz, /metrics
        h.batches.append(h.pipeline.process(fleet(10, 400, 760, spike=("p3", 700))))
    assert h.pipeline.learning_devices() == {"pump": 0}
    assert {(a.uid, a.device) for a in h.alerts} == {(h.alerts[0].uid, "p3")}  # one alert
    assert min(a.started_at for a in h.alerts) >= SPAN
    [learning] = [e for e in logs if e["event"] == "devices_learning_span"]
    assert learning["devices"] == 10
    assert learning["until"] == SPAN
    assert len([e for e in logs if e["event"] == "device_learnt"]) == 10


def test_a_fleet_that_covered_the_span_in_its_cold_start_is_judged_at_once() -> None:
    config = make_config(cold_start={"readings": 64, "span": 60, "max_readings": 100_000})
    h = Harness({"pump": None}, config, recall=empty_store)
    h.batches.append(h.pipeline.process(fleet(10, 0, 100)))  # 61 s: the span covered
    assert len(h.jobs) == 1
    h.pipeline.install_model("pump", FakeDetector())
    h.batches.append(h.pipeline.process(fleet(10, 100, 400, spike=("p3", 300))))
    assert {a.device for a in h.alerts} == {"p3"}
    assert h.pipeline.stats.learning_windows == 0


def test_after_a_restart_in_the_cold_start_devices_count_from_their_first_reading_kept(
    tmp_path: Path,
) -> None:
    # The daemon kept 650 s of two pumps in the reservoir, then restarted before its first
    # model. The warm tail recalls their newest 300 readings (350-649 s); the pumps have
    # learnt the 600 s span since their first reading (0 s), so they are judged at once.
    config = make_config(cold_start={"readings": 64, "span": SPAN, "warm_readings": 300})
    reservoir = Reservoir(tmp_path / "r.sqlite", 2, max_rows=10_000, max_age=1e9, margin=5.0)
    reservoir.open()
    reservoir.add([Reading("pump", d, float(t), (0.1, 0.0)) for t in range(650) for d in "ab"])
    tap = ReservoirTap({"pump": reservoir})
    h = Harness({"pump": None}, config, recall=empty_store, tap=tap, cold_start_buffer=False)
    h.pipeline.install_model("pump", FakeDetector())
    with capture_logs() as logs:
        h.batches.append(h.pipeline.process([delivery(d, 650.0, 0.1) for d in "ab"]))
    assert h.pipeline.learning_devices() == {"pump": 0}
    assert not [e for e in logs if e["event"] == "devices_learning_span"]
    reservoir.close()
