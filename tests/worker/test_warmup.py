"""Warm start (issue #21, causes 2, 6 and 7): the readings a device sent before its stream's
first model are judged once the model arrives, with alerts suppressed, so its threshold and
spike memory start warm -- in the daemon's cold start and, through the same command, in
replay."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from sentinel.judge.history import unpack
from sentinel.records import Delivery, Reading
from tests.fakes import FakeDetector, Harness, make_config

PERIOD = 40  # readings between a device's normal one-reading pulses
PULSE = 0.8  # far above the noise, below the fake detector's threshold (1.5)


def config(**cold_start: Any) -> Any:
    return make_config(
        windows={"length": 16, "hop": 4, "max_gap": 100},
        cold_start={"readings": 400, "span": 0, **cold_start},
        # the device's own quantile from 200 normal windows on (the fake's scores are tiny)
        threshold={"warmup": 200, "prior_windows": 0, "quantile": 0.995},
        alerts={"open_after": 1, "close_after": 2, "cooldown": 0},
    )


def detector() -> FakeDetector:
    fake = FakeDetector()
    fake._meta = replace(fake.meta, window=16)
    return fake


def series(n: int, start: int = 0, spike_at: int | None = None) -> list[Reading]:
    """Device a: small noise with a pulse every PERIOD readings; a 5.0 spike at ``spike_at``."""
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        x = 0.1 + 0.01 * float(rng.standard_normal())
        if i % PERIOD == 20:
            x += PULSE
        if i == spike_at:
            x = 5.0
        out.append(Reading("pump", "a", float(i), (x, 0.0)))
    return out


def deliver(h: Harness, readings: list[Reading]) -> None:
    for i in range(0, len(readings), 64):
        h.batches.append(
            h.pipeline.process([Delivery("p/a", tuple(readings[i : i + 64]), (), None, 0.0)])
        )


def spike_verdicts(h: Harness, readings: list[Reading]) -> int:
    seen: list[Any] = []
    h.pipeline._observer = lambda verdict, alert: seen.append(verdict)
    deliver(h, readings)
    return sum(v.spike is not None for v in seen)


def cold_started(warm_readings: int, spike_at: int | None = None) -> Harness:
    """The daemon's path: 400 readings collected, training requested, the model installed
    (as the trainer hands it over), and nothing scored yet."""
    h = Harness({"pump": None}, config(warm_readings=warm_readings))
    deliver(h, series(400, spike_at=spike_at))
    assert len(h.jobs) == 1
    h.pipeline.install_model("pump", detector())
    return h


def test_the_cold_start_ends_with_warm_thresholds_and_known_pulses() -> None:
    h = cold_started(1000)
    deliver(h, series(4, start=400))  # the swap is applied before this pass
    thresholds = h.pipeline._thresholds.snapshot("pump")
    # (400 - 16) / 4 + 1 = 97 windows, less those that held an early pulse (not yet known:
    # a spike, so anomalous, so not learnt)
    assert thresholds["a"]["normal_seen"] >= 80
    pulses = h.pipeline._spikes.normal_spikes("pump", "a")[0]
    assert len(pulses) >= 3  # the training rows' pulses are remembered
    assert h.pipeline.stats.warm_windows == 97
    assert h.alerts == []  # warm-up windows never alert


def test_a_warmed_device_is_not_seeded_as_well() -> None:
    # The trainer's seeds are the new model's scores on the newest of the rows it trained
    # on, at hop 1; a device warmed from those rows learns them once, at the live hop.
    h = Harness({"pump": None}, config(warm_readings=1000))
    deliver(h, series(400))
    seeds = {"a": [0.0123] * 300, "c": [0.0456] * 250}
    h.pipeline.install_model("pump", detector(), seeds)
    deliver(h, series(4, start=400))
    thresholds = h.pipeline._thresholds.snapshot("pump")
    assert 80 <= thresholds["a"]["normal_seen"] <= 98  # its 97 warm windows, the live one
    kept = float(np.float32(0.0123))  # as the threshold holds a score (float32)
    assert kept not in unpack(thresholds["a"]["recent"])
    # a device that trained the model but kept no readings here starts from its seeds
    assert thresholds["c"]["normal_seen"] == 250
    assert set(unpack(thresholds["c"]["recent"])) == {float(np.float32(0.0456))}


def test_the_first_pulses_after_the_model_are_known_as_normal() -> None:
    # Without the warm-up the spike check learns from the first scored row: its first
    # pulses (after its 200-reading noise warm-up) are spikes and alert.
    cold = cold_started(0)
    assert spike_verdicts(cold, series(400, start=400)) > 0
    assert cold.alerts
    warm = cold_started(1000)
    assert spike_verdicts(warm, series(400, start=400)) == 0
    assert warm.alerts == []


def test_a_spike_in_the_training_rows_does_not_raise_the_threshold() -> None:
    h = cold_started(1000, spike_at=300)
    deliver(h, series(4, start=400))
    recent = unpack(h.pipeline._thresholds.snapshot("pump")["a"]["recent"])
    assert max(recent) < 1.0  # the 5.0 window was anomalous: it taught the threshold nothing
    assert h.alerts == []  # and, in the warm-up, it raised no alert


def test_a_device_first_seen_after_the_model_starts_cold() -> None:
    h = cold_started(1000)
    late = [Reading("pump", "b", r.ts, r.values) for r in series(40, start=400)]
    h.pipeline.process([Delivery("p/b", tuple(late), (), None, 0.0)])
    assert h.pipeline._thresholds.snapshot("pump")["b"]["normal_seen"] <= 7


def test_replay_warms_through_the_same_command() -> None:
    h = Harness({"pump": detector()}, config(warm_readings=200))
    h.pipeline.warm_up("pump", series(400))
    deliver(h, series(4, start=400))
    # only the newest 200 readings: (200 - 16) / 4 + 1 windows, and the 4 live ones' one
    assert h.pipeline.stats.warm_windows == 47
    assert h.pipeline._thresholds.snapshot("pump")["a"]["normal_seen"] == 48
    assert h.alerts == []
