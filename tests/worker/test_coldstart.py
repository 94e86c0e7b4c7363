"""The cold start on data sampled every 5 minutes (issue #21, cause 1): it learns the
interval from what it collected instead of splitting every step as a 60 s gap, and the
model's interval then governs the stream's windows. And on data read every second: the
first model waits for ``cold_start.span`` of the stream's own time (issue #21)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from structlog.testing import capture_logs

from sentinel.config import ColdStartConfig
from sentinel.model import ModelRegistry
from sentinel.records import Delivery, Reading
from sentinel.timescale import devices_to_cover, stream_span
from sentinel.worker.coldstart import ColdStartBuffer, Trainer, TrainingJob
from tests.fakes import FakeDetector, Harness, make_config

FIVE_MIN = 300.0


def _delivery(start: int, n: int) -> Delivery:
    readings = tuple(
        Reading("pump", "a", i * FIVE_MIN, (float(np.sin(i / 5)), 0.0))
        for i in range(start, start + n)
    )
    return Delivery("p/a", readings, rejected=(), ack=None, received_at=0.0)


def test_cold_start_learns_a_five_minute_interval_and_keeps_its_runs_whole() -> None:
    config = make_config(windows={"length": 4, "hop": 1})  # max_gap on auto
    h = Harness({"pump": None}, config)
    h.pipeline.process([_delivery(0, 64)])
    [job] = h.jobs
    assert [len(s) for s in job.segments] == [64]  # main: 64 runs of 1, none trainable
    assert job.interval == FIVE_MIN
    assert job.max_gap == 60 * FIVE_MIN


def test_the_models_interval_governs_the_windows() -> None:
    detector = FakeDetector()
    detector._meta = replace(detector.meta, interval=FIVE_MIN)
    h = Harness({"pump": detector}, make_config(windows={"length": 4, "hop": 1}))
    h.pipeline.process([_delivery(0, 20)])
    assert h.pipeline.stats.scored == 17  # every window from the fourth reading on


def test_a_refused_cold_start_names_max_gap(tmp_path: Path) -> None:
    config = make_config(windows={"length": 4, "hop": 1, "max_gap": 60})
    failed: list[str] = []
    done = threading.Event()

    def on_failure(stream: str, reason: str) -> None:
        failed.append(reason)
        done.set()

    trainer = Trainer(
        config,
        ModelRegistry(tmp_path / "models"),
        torch.device("cpu"),
        on_model=lambda stream, detector: done.set(),
        on_failure=on_failure,
    )
    trainer.start()
    try:
        trainer.submit(TrainingJob(config.streams[0], [], 0.0, 1.0, FIVE_MIN, 60.0, 64))
        assert done.wait(10)
    finally:
        trainer.stop()
    assert len(failed) == 1
    assert "windows.max_gap (=60 s)" in failed[0]
    assert "window (4 readings)" in failed[0]


def test_the_cold_start_rule_asks_readings_and_span_or_max_readings() -> None:
    rule = ColdStartConfig(readings=3000, span=3600, max_readings=50_000)
    assert rule.progress(1500, 3600) == 0.5  # the readings are behind
    assert rule.progress(3000, 900) == 0.25  # the span is
    assert not rule.ready(3000, 3599.0)
    assert rule.ready(3000, 3600.0)
    assert rule.ready(50_000, 60.0)  # a large fleet's first minute: enough whatever it spans
    assert rule.progress(25_000, 60.0) == 0.5
    assert ColdStartConfig(readings=3000, span=0).ready(3000, 0.0)
    # max_readings never trains on fewer than readings
    assert not ColdStartConfig(readings=3000, max_readings=64).ready(2999, 1e9)


def test_a_dozen_pumps_read_every_second_are_learnt_for_an_hour_not_four_minutes() -> None:
    buffer = ColdStartBuffer("pump", ColdStartConfig(), max_gap=None)  # the defaults
    done = False
    t = 0
    while not done:
        for pump in range(12):
            done = buffer.add(Reading("pump", f"p{pump}", float(t), (0.0,))) or done
        t += 1
    assert buffer.covered == 3600.0
    assert buffer.collected == 12 * 3601  # not the 3,000 readings of its first 250 s
    assert [len(s) for s in buffer.segments(min_length=32)] == [3601] * 12


def test_a_meter_read_every_five_minutes_is_not_held_back_by_the_span() -> None:
    buffer = ColdStartBuffer("pump", ColdStartConfig(), max_gap=None)
    done = [buffer.add(Reading("pump", "m", i * FIVE_MIN, (0.0,))) for i in range(3000)]
    assert done.index(True) == 2999  # 3,000 readings: ten days, far more than the span


def test_the_pipeline_trains_once_the_stream_covers_the_span_and_logs_its_progress() -> None:
    config = make_config(windows={"length": 4, "hop": 1}, cold_start={"readings": 64, "span": 600})
    h = Harness({"pump": None}, config)
    every_second = [
        Delivery(
            "p/a",
            (Reading("pump", "a", float(t), (float(np.sin(t / 5)), 0.0)),),
            rejected=(),
            ack=None,
            received_at=0.0,
        )
        for t in range(601)
    ]
    with capture_logs() as logs:
        h.pipeline.process(every_second[:600])
        assert h.jobs == []  # 600 readings, ten times the 64 asked, but 599 s of the 600
        h.pipeline.process(every_second[600:])
    [job] = h.jobs
    assert job.readings == 601
    progress = [e for e in logs if e["event"] == "cold_start_progress"]
    assert [e["progress"] for e in progress] == [i / 20 for i in range(1, 20)]
    assert progress[-1]["covered"] == 570.0
    assert progress[-1]["span"] == 600.0


def test_a_cold_start_cut_short_by_max_readings_says_so_and_names_the_settings() -> None:
    config = make_config(
        windows={"length": 4, "hop": 1},
        cold_start={"readings": 64, "span": 600, "max_readings": 200},
    )
    h = Harness({"pump": None}, config)
    fleet = [  # ten pumps read every second: 200 readings are their first 19 s
        Delivery(
            f"p/{pump}",
            (Reading("pump", str(pump), float(t), (float(np.sin(t / 5)), 0.0)),),
            rejected=(),
            ack=None,
            received_at=0.0,
        )
        for t in range(20)
        for pump in range(10)
    ]
    with capture_logs() as logs:
        h.pipeline.process(fleet)
    [job] = h.jobs
    assert job.readings == 200
    [short] = [e for e in logs if e["event"] == "cold_start_span_short"]
    assert short["log_level"] == "warning"
    assert "learns 19 s of the stream's time, not cold_start.span (600 s)" in short["hint"]
    assert "cold_start.max_readings (200)" in short["hint"]


def test_a_cold_start_that_covers_its_span_is_not_called_short() -> None:
    rule = ColdStartConfig(readings=3000, span=3600, max_readings=50_000)
    assert rule.short_of_span(3600.0) is None
    assert ColdStartConfig(span=0).short_of_span(5.0) is None
    assert rule.short_of_span(50.0) is not None


def test_a_device_whose_clock_is_far_behind_does_not_end_the_wait_for_the_span() -> None:
    # Twelve pumps read every second; one reports a clock a day behind (a dead RTC, a
    # gateway in another time zone). The stream's timestamps then span a day from its first
    # readings, which ended the wait for the hour at once: the model learnt 4 minutes.
    buffer = ColdStartBuffer("pump", ColdStartConfig(), max_gap=None)
    t, done = 0, False
    while not done:
        for pump in range(12):
            ts = float(t) - (86_400.0 if pump == 7 else 0.0)
            done = buffer.add(Reading("pump", f"p{pump}", ts, (0.0,))) or done
        t += 1
    assert buffer.covered == 3600.0
    assert buffer.collected == 12 * 3601  # not the 3,000 readings of its first 250 s


def test_a_minority_whose_clocks_jumped_does_not_end_the_wait_either() -> None:
    # Two of twelve pumps' clocks jump a day ahead after their first readings (an RTC that
    # booted at a stale time, then synchronised): their own spans are a day long.
    buffer = ColdStartBuffer("pump", ColdStartConfig(span=600), max_gap=None)
    done = False
    for t in range(600):
        for pump in range(12):
            jump = 86_400.0 if pump in (3, 9) and t >= 5 else 0.0
            done = buffer.add(Reading("pump", f"p{pump}", float(t) + jump, (0.0,))) or done
    assert not done  # 599 s of the 600 on the pumps whose clocks kept time
    assert buffer.covered == 599.0
    for pump in range(12):
        done = buffer.add(Reading("pump", f"p{pump}", 600.0, (0.0,))) or done
    assert done


def test_the_stream_span_reads_each_device_on_its_own_clock() -> None:
    assert stream_span([]) == 0.0
    assert stream_span([42.0]) == 42.0
    assert stream_span([10.0, 1e6]) == 10.0  # two devices: both must cover it
    assert stream_span([10.0, 20.0, 30.0, 1e6]) == 30.0  # one in four jumped: left out
    # the 75th percentile, taken at or below: 4 of 12 cover it, 3 do not
    assert stream_span([5.0] * 8 + [3600.0] * 4) == 3600.0
    assert stream_span([5.0] * 9 + [3600.0] * 3) == 5.0
    assert [devices_to_cover(n) for n in (1, 2, 3, 4, 12, 100)] == [1, 2, 2, 2, 4, 26]
