"""Swapping models in a running pipeline: no reading dropped, no window scored twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from sentinel.records import Alert, Delivery, Reading, Verdict, WriteBatch
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, make_config


def test_swapping_under_load_loses_no_reading_and_scores_each_window_once() -> None:
    devices, per_device = 16, 600
    scored: list[tuple[str, float, str]] = []
    batches: list[WriteBatch] = []

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        w = verdict.score.window
        scored.append((w.device, w.end_ts, verdict.score.model_version))

    pipeline = Pipeline(
        make_config(),
        sink=batches.append,
        request_training=lambda job: None,
        models={"pump": FakeDetector(version="v0")},
        observer=observe,
    )
    pipeline.start()
    done = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not done.is_set():
            swaps += 1
            pipeline.install_model("pump", FakeDetector(version=f"v{swaps}"))
            time.sleep(0.002)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for i in range(per_device):
            readings = tuple(
                Reading("pump", f"d{d}", 1000.0 + i, (0.1, 0.2)) for d in range(devices)
            )
            delivery = Delivery("p/x", readings, (), None, float(i))
            while not pipeline.offer(delivery):
                time.sleep(0.001)
        deadline = time.monotonic() + 20
        while pipeline.depth and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        thread.join()
        pipeline.stop()

    windows_per_device = per_device - 4 + 1  # length 4, hop 1, no gaps
    counts = Counter((device, end) for device, end, _ in scored)
    assert len(counts) == devices * windows_per_device  # every window scored ...
    assert set(counts.values()) == {1}  # ... exactly once
    assert pipeline.stats.readings == devices * per_device
    assert pipeline.rejections.as_dict() == {}
    versions = {v for _, _, v in scored}
    assert swaps > 10
    assert len(versions) >= 2  # scored by several models in turn
    last = {p.device: p.readings for b in batches for p in b.progress}
    assert last == {f"d{d}": per_device for d in range(devices)}


def test_the_swap_recalibrates_thresholds_from_the_new_models_scores() -> None:
    verdicts: list[Verdict] = []
    pipeline = Pipeline(
        # The seeded quantile alone, not shrunk towards the calibration threshold.
        make_config(threshold={"warmup": 1000, "prior_windows": 0}),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": FakeDetector(version="old")},
        observer=lambda verdict, alert: verdicts.append(verdict),
    )
    seeds = {"d1": [float(v) for v in np.linspace(0.0, 0.5, 1500)]}
    pipeline.install_model("pump", FakeDetector(version="new"), seeds)

    def feed(start: int) -> None:
        for i in range(start, start + 8):
            readings = tuple(Reading("pump", d, float(i), (0.1, 0.1)) for d in ("d1", "d2"))
            pipeline.process([Delivery("p/x", readings, (), None, float(i))])

    feed(0)
    by_device = {v.score.window.device: v for v in verdicts}
    assert by_device["d1"].score.model_version == "new"
    # d1: 0.995 quantile of its seeded scores times the 1.5 headroom, at once.
    assert by_device["d1"].threshold == pytest.approx(0.4975 * 1.5, rel=0.01)
    # d2 had no recent windows: it warms up on the model's calibration threshold.
    assert by_device["d2"].threshold == pytest.approx(1.5)


class Scaled(FakeDetector):
    """A model with its own score scale: ``factor`` times the fake's score."""

    def __init__(self, version: str = "fake-1", factor: float = 1.0) -> None:
        super().__init__(version)
        self.factor = factor

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, errors = super().score(windows)
        return scores * self.factor, errors * self.factor


def shadow_pipeline(verdicts: list[Verdict], shadow: float) -> Pipeline:
    return Pipeline(
        make_config(retrain={"shadow": shadow}, threshold={"warmup": 1000, "prior_windows": 0}),
        sink=lambda batch: None,
        request_training=lambda job: None,
        models={"pump": Scaled(version="old")},
        observer=lambda verdict, alert: verdicts.append(verdict),
    )


def feed(pipeline: Pipeline, start: int, stop: int, spike_at: int | None = None) -> None:
    for i in range(start, stop):
        x = 9.0 if i == spike_at else 0.1
        pipeline.process(
            [Delivery("p/x", (Reading("pump", "d1", float(i), (x, 0.1)),), (), None, 0)]
        )


# The new model scores normal windows 0.3, but its held-back windows only 0.1: the
# threshold they alone give (0.995 quantile x 1.5 = 0.15) is too tight for live data.
HELD_BACK = {"d1": [0.1] * 1500}


def test_a_new_model_swapped_at_once_starts_too_tight() -> None:
    verdicts: list[Verdict] = []
    pipeline = shadow_pipeline(verdicts, shadow=0.0)
    new = Scaled(version="new", factor=3.0)
    pipeline.install_model("pump", new, HELD_BACK, shadow=True)
    feed(pipeline, 0, 20)
    assert {v.score.model_version for v in verdicts} == {"new"}
    assert verdicts[0].threshold == pytest.approx(0.15, rel=0.01)
    assert all(v.is_anomaly for v in verdicts)  # every normal window is a false alarm


def test_in_its_shadow_period_a_new_model_learns_live_scores_then_takes_over() -> None:
    verdicts: list[Verdict] = []
    pipeline = shadow_pipeline(verdicts, shadow=30.0)
    feed(pipeline, 0, 10)
    new = Scaled(version="new", factor=3.0)
    pipeline.install_model("pump", new, HELD_BACK, shadow=True)
    feed(pipeline, 10, 60, spike_at=20)
    by_version = Counter(v.score.model_version for v in verdicts)
    ends = [v.score.window.end_ts for v in verdicts]
    assert ends == sorted(set(ends))  # every window scored once, none skipped
    assert len(ends) == 60 - 4 + 1
    # The active model decided every verdict for 30 s of readings after the install.
    first_new = next(v for v in verdicts if v.score.model_version == "new")
    assert first_new.score.window.end_ts == pytest.approx(10 + 30 + 1)
    assert by_version["old"] == 41 - 3  # windows ending at 3..40
    # It starts from its live scores on windows the old model judged normal (0.3), not
    # from the held-back 0.1, and not from the spike's windows (27) the old model flagged.
    assert first_new.threshold == pytest.approx(0.3 * 1.5, rel=0.01)
    assert not any(v.is_anomaly for v in verdicts if v.score.model_version == "new")


def test_a_newer_model_supersedes_one_in_its_shadow_period() -> None:
    verdicts: list[Verdict] = []
    pipeline = shadow_pipeline(verdicts, shadow=30.0)
    pipeline.install_model("pump", Scaled(version="first"), HELD_BACK, shadow=True)
    feed(pipeline, 0, 20)
    pipeline.install_model("pump", Scaled(version="second"), HELD_BACK, shadow=True)
    feed(pipeline, 20, 60)
    versions = [v.score.model_version for v in verdicts]
    assert "first" not in versions
    assert versions[-1] == "second"
    # The second's 30 s began with its own first window, at 20.
    assert next(
        v for v in verdicts if v.score.model_version == "second"
    ).score.window.end_ts == pytest.approx(51)


class Broken(Scaled):
    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("CUDA error: device-side assert triggered")


def test_a_model_that_fails_in_its_shadow_period_is_dropped_and_the_active_one_stays() -> None:
    verdicts: list[Verdict] = []
    pipeline = shadow_pipeline(verdicts, shadow=30.0)
    pipeline.install_model("pump", Broken(version="broken"), HELD_BACK, shadow=True)
    feed(pipeline, 0, 60)
    assert {v.score.model_version for v in verdicts} == {"old"}
    assert len(verdicts) == 60 - 4 + 1  # no window lost to the failure
