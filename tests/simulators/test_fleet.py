"""The pump fleet simulator: determinism, physics, labelled anomalies, and the MQTT CLI."""

from __future__ import annotations

import functools
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from simulators import fleet as fleet_module
from simulators.broker import PrivateBroker
from simulators.fleet import (
    FEATURES,
    KINDS,
    AnomalyEvent,
    FleetSimulator,
    SimReading,
    default_start,
    encode,
    parse_start,
)
from tests.simulators.helpers import collecting

REPO = Path(__file__).resolve().parents[2]
START = 1_704_067_200.0
Matrix = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


def simulate(
    n: int, devices: int = 3, seed: int = 11, step: float = 1.0, **kw: Any
) -> tuple[FleetSimulator, Matrix, dict[str, Matrix]]:
    sim = FleetSimulator(devices, seed, step, start_ts=START, **kw)
    rows = [rs for _, rs in zip(range(n), sim.steps(), strict=False)]
    ts = np.array([r[0].ts for r in rows])
    data = {
        d: np.array([[r[i].values[f] for f in FEATURES] for r in rows])
        for i, d in enumerate(sim.devices)
    }
    return sim, ts, data


@functools.cache
def _clean_run() -> tuple[FleetSimulator, Matrix, dict[str, Matrix]]:
    return simulate(5000, warmup=300, anomaly_rate=0)


@pytest.fixture
def clean() -> tuple[Matrix, dict[str, Matrix]]:
    _, ts, data = _clean_run()
    return ts, data


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, ts_a, data_a = simulate(2000, anomaly_rate=20, warmup=100)
    b, _, data_b = simulate(2000, anomaly_rate=20, warmup=100)
    _, _, data_c = simulate(2000, seed=12, anomaly_rate=20, warmup=100)
    assert a.truth == b.truth
    assert a.truth
    for device in a.devices:
        np.testing.assert_array_equal(data_a[device], data_b[device])
        assert not np.array_equal(data_a[device], data_c[device])
    np.testing.assert_allclose(np.diff(ts_a), 1.0)


def test_reading_shape_and_units() -> None:
    sim = FleetSimulator(2, 0, 0.5, start_ts=START)
    first = next(sim.steps())
    assert [r.device for r in first] == ["pump-000", "pump-001"]
    assert isinstance(first[0], SimReading)
    assert first[0].ts == START
    assert tuple(first[0].values) == FEATURES
    v = first[0].values
    assert 10 < v["flow"] < 100
    assert 1 < v["pressure"] < 8
    assert 3 < v["current"] < 60
    assert 10 < v["temperature"] < 90
    assert 0.2 < v["vibration"] < 5
    assert 380 < v["voltage"] < 420


def test_truth_after_warmup_and_never_overlapping() -> None:
    sim, _, data = simulate(8000, devices=4, anomaly_rate=30, warmup=900)
    assert {e.kind for e in sim.truth} == set(KINDS)
    by_device: dict[str, list[AnomalyEvent]] = {}
    for event in sim.truth:
        assert event.start >= START + 900
        assert event.end > event.start
        assert event.features
        assert set(event.features) <= set(FEATURES)
        by_device.setdefault(event.device, []).append(event)
    for events in by_device.values():
        for before, after in itertools.pairwise(events):
            assert before.end <= after.start
    # Values stay physical (finite, not absurd) even with many anomalies.
    for matrix in data.values():
        assert np.isfinite(matrix).all()
        assert (matrix[:, [0, 1, 2, 4]] >= 0).all()
        assert (matrix[:, 3] < 150).all()


def test_kinds_and_magnitude_are_honoured() -> None:
    sim, _, _ = simulate(4000, anomaly_rate=30, warmup=0, kinds=["stuck", "spike"])
    assert {e.kind for e in sim.truth} == {"stuck", "spike"}
    with pytest.raises(ValueError, match="kinds"):
        FleetSimulator(1, 0, kinds=["meteor"])
    small, _, _ = simulate(4000, anomaly_rate=30, warmup=0, kinds=["level_shift"], magnitude=0.5)
    assert all(2 <= abs(e.magnitude) <= 3 for e in small.truth)


def test_event_json_round_trip() -> None:
    event = AnomalyEvent("pump-001", "drift", ("temperature",), 10.0, 2000.0, -7.5)
    data = json.loads(event.to_json())
    assert data == {
        "device": "pump-001",
        "kind": "drift",
        "features": ["temperature"],
        "start": 10.0,
        "end": 2000.0,
        "magnitude": -7.5,
    }


def _events(kind: str) -> Iterator[tuple[FleetSimulator, AnomalyEvent, Mask, Matrix, Matrix]]:
    """Each event of one kind with its device's data, next to the same run without anomalies.

    Anomalies draw from their own random stream, so the anomaly-free run of the same seed is
    the counterfactual: what the sensors would have said.
    """
    sim, ts, data = simulate(5000, warmup=300, anomaly_rate=12, kinds=[kind])
    _, _, clean = _clean_run()
    assert sim.truth
    for event in sim.truth:
        mask = (ts >= event.start) & (ts < event.end)
        yield sim, event, mask, data[event.device], clean[event.device]


def test_spike_is_a_large_reading() -> None:
    for sim, event, mask, data, clean in _events("spike"):
        j = FEATURES.index(event.features[0])
        scale = sim.scale(event.device)[event.features[0]]
        assert 1 <= mask.sum() <= 3
        assert abs(event.magnitude) >= 8
        jump = data[mask, j] - clean[mask, j]
        np.testing.assert_allclose(jump, event.magnitude * scale, atol=0.15 * scale + 0.1)
        after = np.flatnonzero(mask)[-1] + 1
        assert data[after, j] == clean[after, j]


def test_level_shift_moves_the_mean() -> None:
    for sim, event, mask, data, clean in _events("level_shift"):
        j = FEATURES.index(event.features[0])
        scale = sim.scale(event.device)[event.features[0]]
        assert mask.sum() >= 16
        shift = data[mask, j].mean() - clean[mask, j].mean()
        assert abs(shift) >= 3.5 * scale
        assert shift == pytest.approx(event.magnitude * scale, abs=0.2 * scale)


def test_drift_grows_linearly() -> None:
    for sim, event, mask, data, clean in _events("drift"):
        j = FEATURES.index(event.features[0])
        scale = sim.scale(event.device)[event.features[0]]
        gap = data[mask, j] - clean[mask, j]
        if len(gap) < 200:
            continue  # cut off by the end of the run
        assert abs(gap[:20].mean()) < 0.5 * scale
        slope = np.polyfit(np.arange(len(gap)), gap, 1)[0]
        assert np.sign(slope) == np.sign(event.magnitude)
        assert abs(gap[-20:].mean()) > 0.5 * abs(event.magnitude) * scale * len(gap) / (
            (event.end - event.start) / sim.step
        )


def test_stuck_sensor_has_zero_variance() -> None:
    for _, event, mask, data, clean in _events("stuck"):
        j = FEATURES.index(event.features[0])
        assert np.ptp(data[mask, j]) == 0.0
        assert np.ptp(clean[mask, j]) > 0.0


def test_noise_burst_raises_variance() -> None:
    for _, event, mask, data, clean in _events("noise_burst"):
        j = FEATURES.index(event.features[0])
        burst = np.diff(data[mask, j]).std()
        normal = np.diff(clean[mask, j]).std()
        assert burst > 4 * normal, event


def test_decorrelation_breaks_current_following_flow() -> None:
    flow, current = FEATURES.index("flow"), FEATURES.index("current")
    drops = []
    for _, event, mask, data, clean in _events("decorrelation"):
        assert event.features == ("current",)
        broken = np.corrcoef(data[mask, flow], data[mask, current])[0, 1]
        normal = np.corrcoef(clean[mask, flow], clean[mask, current])[0, 1]
        assert broken < normal
        drops.append(normal - broken)
    assert np.mean(drops) > 0.5


def test_normal_data_has_physical_correlations(clean: tuple[Matrix, dict[str, Matrix]]) -> None:
    _, data = clean
    f, p, i, _, vib, volt = range(6)
    for matrix in data.values():
        corr: Matrix = np.atleast_2d(np.corrcoef(matrix.T))
        assert corr[f, i] > 0.9  # current follows hydraulic power
        assert corr[f, p] > 0.85  # system curve
        assert corr[i, volt] < 0  # line voltage sags with current
        assert corr[f, vib] > 0.3  # vibration grows with speed


def test_daily_seasonality() -> None:
    _, ts, data = simulate(2880, devices=4, step=60.0, anomaly_rate=0)
    hour = (ts % 86_400) // 3600
    day, night = (hour >= 12) & (hour < 18), hour < 6
    for matrix in data.values():
        assert matrix[day, 3].mean() > matrix[night, 3].mean() + 3  # warmer in the afternoon
        assert matrix[day, 0].mean() > 1.03 * matrix[night, 0].mean()  # more demand
        assert matrix[day, 5].mean() < matrix[night, 5].mean()  # grid sags at peak


def test_payload_encodings() -> None:
    reading = SimReading("pump-007", 1700000000.5, {"flow": 40.1, "current": 12.0})
    flat = json.loads(encode(reading, 3, "json"))
    assert flat == {"ts": 1700000000.5, "seq": 3, "flow": 40.1, "current": 12.0}
    pack = json.loads(encode(reading, 3, "senml"))
    assert pack[0] == {"bn": "pump-007:", "bt": 1700000000.5, "n": "flow", "u": "m3/h", "v": 40.1}
    assert pack[1] == {"n": "current", "u": "A", "v": 12.0}
    assert parse_start("2024-01-01T00:00:00") == START
    assert parse_start("2024-01-01T01:00:00+01:00") == START
    assert parse_start("1704067200") == START


def test_a_run_faster_than_real_time_starts_early_enough_to_end_now() -> None:
    """A daemon refuses readings more than ingest.max_future_skew ahead of its clock (issue
    #19): the default start keeps the last reading of a bounded run at the present."""
    now = 1_800_000_000.0
    # `make demo`: an hour at 40 readings/s of 1 simulated second each.
    start = default_start(144_000, 1.0, 40.0, now)
    assert start + 144_000 * 1.0 == pytest.approx(now + 3600, abs=1)  # the end, at the end
    assert default_start(2400, 1.0, 0.0, now) == now - 2400  # as fast as possible
    assert default_start(600, 1.0, 1.0, now) == now  # real time: from now on
    assert default_start(None, 1.0, 40.0, now) == now  # unbounded: it cannot know


@pytest.mark.integration
def test_cli_publishes_exactly_the_summary(tmp_path: Path) -> None:
    with PrivateBroker() as broker, collecting(broker) as received:
        truth, summary = tmp_path / "truth.jsonl", tmp_path / "summary.json"
        cmd = [
            sys.executable, "-m", "simulators.fleet", "--broker", broker.url,
            "--devices", "3", "--rate", "0", "--steps", "400", "--seed", "5",
            "--truth", str(truth), "--summary", str(summary), "--start", "2024-01-01",
            "--anomaly-rate", "60", "--warmup", "60",
        ]  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        counts = json.loads(summary.read_text())
        assert counts["total"] == 1200
        assert counts["published"] == {f"pump-{i:03d}": 400 for i in range(3)}
        assert counts["unacknowledged"] == 0
        received.wait_for(counts["total"], timeout=60)
    assert len(received) == 1200
    first = json.loads(received[0].payload)
    assert received[0].topic == "plant/pump-000/pump"
    assert set(first) == {"ts", "seq", *FEATURES}
    assert first["ts"] == START
    assert first["seq"] == 0
    seqs = [json.loads(m.payload)["seq"] for m in received if m.topic == "plant/pump-002/pump"]
    assert seqs == list(range(400))
    events = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(events) == counts["anomalies"] > 0
    assert all(e["start"] >= START + 60 for e in events)
    # Same seed, same simulation: the library agrees with what the CLI published.
    sim = FleetSimulator(3, 5, 1.0, start_ts=START, anomaly_rate=60, warmup=60)
    expected = [r for _, rs in zip(range(400), sim.steps(), strict=False) for r in rs]
    got = {(m.topic, json.loads(m.payload)["seq"]): json.loads(m.payload) for m in received}
    for n, reading in enumerate(expected):
        payload = got[(f"plant/{reading.device}/pump", n // 3)]
        assert payload["ts"] == reading.ts
        assert {f: payload[f] for f in FEATURES} == reading.values


class _TimedPublisher:
    """Stands in for simulators.broker.Publisher: notes when each reading was handed over."""

    sent: ClassVar[list[tuple[float, str]]] = []

    def __init__(self, *_: object, **__: object) -> None:
        type(self).sent = []

    def start(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.sent.append((time.monotonic(), topic))

    def finish(self, timeout: float = 30.0) -> int:
        return 0


def test_spread_publishes_a_steps_readings_over_its_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Devices whose clocks are not in step: the daemon sees a trickle, not one burst a second
    # (what benchmarks/disk_writes.py --spread measures a flush interval's commits with).
    monkeypatch.setattr(fleet_module, "Publisher", _TimedPublisher)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # main() sets SIGINT/SIGTERM's
    argv = ["--broker", "mqtt://127.0.0.1:1", "--devices", "4", "--rate", "2", "--steps", "2"]
    assert fleet_module.main([*argv, "--spread"]) == 0
    sent = _TimedPublisher.sent
    assert [topic for _, topic in sent] == [f"plant/pump-{i:03d}/pump" for i in range(4)] * 2
    # A step's last device is due 3/4 of the 0.5 s period after its first (without --spread
    # all four go at once). Lower bounds only: a loaded machine can delay, never hasten.
    assert sent[3][0] - sent[0][0] >= 0.3
    assert sent[7][0] - sent[0][0] >= 0.8
