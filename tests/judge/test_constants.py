"""The constant check (sentinel.judge.constants): features constant in training are judged by
any departure, and a departure that persists stops alerting (issue #21)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sentinel.config import ConstantsConfig, SpikesConfig, ThresholdConfig
from sentinel.judge.constants import ConstantCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.records import ConstantHit, Window
from sentinel.worker.snapshots import ThresholdSnapshots
from tests.fakes import FakeDetector

WINDOW, HOP = 8, 2


class FlagDetector(FakeDetector):
    """The fake model, trained on data where feature y (index 1) was always 0."""

    def __init__(self, version: str = "fake-1") -> None:
        super().__init__(version)
        self._meta = type(self._meta)(
            **{**self._meta.__dict__, "training": {"n_readings": 999}},
        )

    def constant_values(self) -> dict[int, float]:
        return {1: 0.0}


def windows_of(flag: list[float], device: str = "a") -> list[Window]:
    """The hop-``HOP`` windows of a device whose x is 0.1 and y is ``flag``, 1 s apart."""
    rows = np.stack([np.full(len(flag), 0.1), np.asarray(flag)], axis=1).astype(np.float32)
    return [
        Window("pump", device, float(end - WINDOW), float(end - 1), rows[end - WINDOW : end])
        for end in range(WINDOW, len(rows) + 1, HOP)
    ]


def run(check: ConstantCheck, flag: list[float], **kw: str) -> list[ConstantHit | None]:
    detector = FlagDetector(**kw)
    hits: list[ConstantHit | None] = []
    for window in windows_of(flag):  # one window per pass, as a slow device arrives
        hits.extend(check.check(detector, [window]))
    return hits


def test_a_flag_that_switches_and_stays_is_flagged_until_its_new_value_is_learnt() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag = [0.0] * 40 + [1.0] * 60
    hits = run(check, flag)
    flagged = [i for i, h in enumerate(hits) if h is not None]
    first = next(h for h in hits if h is not None)
    assert (first.feature, first.value, first.expected) == (1, 1.0, 0.0)
    assert math.isclose(first.exceedance, 1 / 1000)
    # The first window holding a 1 ends at reading 41; the new value is learnt once it was
    # held 6 readings: a bounded run of flagged windows, none after.
    assert flagged[0] == (41 - WINDOW) // HOP + 1
    assert flagged == list(range(flagged[0], flagged[-1] + 1))
    assert len(flagged) <= 6 // HOP + 1
    assert all(h is None for h in hits[flagged[-1] + 1 :])
    events = check.drain_events()
    assert [e.kind for e in events] == ["constant_value_learnt"]
    assert events[0].detail["feature"] == "y"
    assert events[0].detail["value"] == 1.0
    assert events[0].detail["accepted"] == [0.0, 1.0]
    assert check.drain_events() == []


def test_switching_back_and_forth_between_known_values_alerts_no_more() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag = [0.0] * 20 + [1.0] * 20 + ([0.0] * 10 + [1.0] * 10) * 4
    hits = run(check, flag)
    last = max(i for i, h in enumerate(hits) if h is not None)
    assert last < (40 - WINDOW) // HOP + 1, "only the first switch is news"


def test_a_short_excursion_is_flagged_once() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag = [0.0] * 30 + [5.0] * 2 + [0.0] * 40
    hits = run(check, flag)
    flagged = [i for i, h in enumerate(hits) if h is not None]
    assert flagged, "a departure from the training value is flagged"
    assert len(flagged) <= WINDOW // HOP + 1  # while the excursion is inside a window
    assert check.drain_events() == []  # counted, not accepted yet
    # By default (accept_returns 1) a value the feature went to and came back from is
    # accepted when it goes there again: the same excursion no longer flags.
    again = run(check, [0.0] * 30 + [5.0] * 2 + [0.0] * 10)
    assert all(h is None for h in again)
    assert [(e.detail["value"], e.detail["returns"]) for e in check.drain_events()] == [(5.0, 1)]


def test_a_hit_points_at_the_newest_departing_reading() -> None:
    # issue #21, an alert closes when its evidence does: windows still holding an
    # excursion that ended are anomalous, but its own readings are the evidence
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag = [0.0] * 30 + [5.0] * 2 + [0.0] * 40  # readings 30 and 31
    detector = FlagDetector()
    ages = {}  # window's newest reading -> the hit's age
    for window in windows_of(flag):
        (hit,) = check.check(detector, [window])
        if hit is not None:
            ages[int(window.end_ts)] = hit.age  # a reading a second from 0
    assert ages == {31: 0, 33: 2, 35: 4, 37: 6}  # reading 31 while it is in a window


def test_a_feature_that_starts_to_vary_is_released_after_relearn_after_readings() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    rng = np.random.default_rng(1)
    flag = [0.0] * 20 + list(rng.normal(3.0, 1.0, 80))
    hits = run(check, flag)
    flagged = [i for i, h in enumerate(hits) if h is not None]
    assert flagged
    assert len(flagged) <= 6 // HOP + 1
    assert all(h is None for h in hits[flagged[-1] + 1 :])
    assert [e.kind for e in check.drain_events()] == ["constant_feature_released"]


def test_non_finite_readings_depart_and_float_noise_does_not() -> None:
    check = ConstantCheck(ConstantsConfig(), HOP)
    assert all(h is None for h in run(check, [0.0, 1e-7, -1e-7] * 10))
    check = ConstantCheck(ConstantsConfig(), HOP)
    assert any(h is not None for h in run(check, [0.0] * 20 + [math.nan] + [0.0] * 10))


def test_off_or_without_constants_nothing_is_judged() -> None:
    flag = [0.0] * 20 + [1.0] * 20
    assert all(h is None for h in run(ConstantCheck(ConstantsConfig(enabled=False), HOP), flag))
    check = ConstantCheck(ConstantsConfig(), HOP)
    assert check.check(FakeDetector(), windows_of(flag)) == [None] * len(windows_of(flag))


def test_a_new_model_brings_its_own_constants() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    run(check, [0.0] * 20 + [1.0] * 20)  # learnt 1 under fake-1
    check.drain_events()
    hits = run(check, [0.0] * 20 + [1.0] * 20, version="fake-2")
    assert any(h is not None for h in hits), "fake-2 knows only its training value"


def test_a_learnt_value_survives_a_restart_through_the_snapshot(tmp_path: Path) -> None:
    """A restart took back thresholds and spikes but not the values the constant check had
    learnt: the flag's new value alerted again after every restart."""
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag = [0.0] * 40 + [1.0] * 60
    assert any(run(check, flag))  # departed, then learnt 1.0
    assert [e.kind for e in check.drain_events()] == ["constant_value_learnt"]
    path = tmp_path / "thresholds.json"
    ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), HOP), check
    ).save({"pump": "fake-1"})

    restarted = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), HOP), restarted
    ).restore({"pump": ("fake-1", 2)})
    assert restarted.snapshot("pump") == check.snapshot("pump")
    assert not any(run(restarted, [1.0] * 40)), "the learnt value alerted again"
    assert restarted.drain_events() == []
    assert any(run(restarted, [0.0] * 8 + [2.0] * 10)), "a new departure still alerts"

    # Learnt on another model's training values: not taken back.
    other = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), HOP), other
    ).restore({"pump": ("fake-2", 2)})
    assert other.snapshot("pump") == {}


def flagged_pulses(hits: list[ConstantHit | None], pulses: list[int]) -> list[int]:
    """Which of the readings in ``pulses`` some flagged window held (windows_of's layout)."""
    held: set[int] = set()
    for i, hit in enumerate(hits):
        if hit is not None:
            end = i * HOP + WINDOW  # one past the window's newest reading
            held.update(p for p in pulses if end - WINDOW <= p < end)
    return sorted(held)


def pulsed(excursion: list[float], times: int) -> tuple[list[float], list[int]]:
    """A flag at its training value 0 that goes on ``excursion`` ``times`` times, 20
    readings apart; and where each excursion starts."""
    flag = [0.0] * 30
    pulses = []
    for _ in range(times):
        pulses.append(len(flag))
        flag += excursion + [0.0] * 20
    return flag, pulses


def test_a_pulse_that_recurs_is_accepted_after_accept_returns_excursions() -> None:
    """A command sent as a one-reading pulse, never in training (issue #21: spacecraft
    telemetry's command channels): its first ``accept_returns`` pulses alert, whatever
    their readings' alignment with the windows, and none after."""
    check = ConstantCheck(ConstantsConfig(relearn_after=6, accept_returns=2), HOP)
    flag, pulses = pulsed([1.0], 5)
    hits = run(check, flag)
    assert flagged_pulses(hits, pulses) == pulses[:2]
    (event,) = check.drain_events()
    assert event.kind == "constant_value_learnt"
    assert (event.detail["value"], event.detail["returns"]) == (1.0, 2)
    assert event.detail["accepted"] == [0.0, 1.0]
    assert any(run(check, [0.0] * 8 + [2.0] + [0.0] * 8)), "another value still alerts"


def test_a_held_value_is_learnt_with_no_returns_counted() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6, accept_returns=2), HOP)
    run(check, [0.0] * 40 + [1.0] * 60)
    (event,) = check.drain_events()
    assert event.detail["returns"] == 0


def test_with_accept_returns_0_every_pulse_alerts() -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6, accept_returns=0), HOP)
    flag, pulses = pulsed([1.0], 5)
    assert flagged_pulses(run(check, flag), pulses) == pulses
    assert check.drain_events() == []


@pytest.mark.parametrize(
    "excursion",
    [
        [1.0, 2.0],  # not one value throughout: a wandering channel, not a pulse
        [math.nan],  # a reading that is not a number is never a value to accept
        [1.0] * 3 + [math.inf],
    ],
)
def test_excursions_that_are_not_one_value_are_not_counted(excursion: list[float]) -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6, accept_returns=1), HOP)
    flag, pulses = pulsed(excursion, 4)
    assert flagged_pulses(run(check, flag), pulses) == pulses
    assert check.drain_events() == []


def test_returns_counted_survive_a_restart() -> None:
    config = ConstantsConfig(relearn_after=6, accept_returns=2)
    check = ConstantCheck(config, HOP)
    assert any(run(check, [0.0] * 30 + [1.0] + [0.0] * 20))  # one excursion, back
    saved: dict[str, Any] = json.loads(json.dumps(check.snapshot("pump")))  # as saved
    assert saved["a"]["features"]["1"]["returns"] == [[1.0, 1]]
    restarted = ConstantCheck(config, HOP)
    assert restarted.restore("pump", saved, "fake-1") == 1
    assert any(run(restarted, [0.0] * 8 + [1.0] + [0.0] * 20)), "the second pulse alerts"
    assert restarted.drain_events() == []
    assert not any(run(restarted, [0.0] * 8 + [1.0] + [0.0] * 20)), "the third does not"
    assert [e.detail["returns"] for e in restarted.drain_events()] == [2]
    # a snapshot from before returns were counted restores with none
    del saved["a"]["features"]["1"]["returns"]
    older = ConstantCheck(config, HOP)
    older.restore("pump", saved, "fake-1")
    again: dict[str, Any] = json.loads(json.dumps(older.snapshot("pump")))
    assert again["a"]["features"]["1"]["returns"] == []


class CommandsDetector(FlagDetector):
    """The fake model, whose training held pulse trains resting at 0 and pulsing to 1 (one-hot
    command channels) beside y, which stayed 0: a command training never saw sent."""

    def __init__(self, pairs: tuple[tuple[float, float], ...] = ((0.0, 1.0),)) -> None:
        super().__init__()
        self._pairs = pairs

    def pulse_shapes(self) -> tuple[tuple[float, float], ...]:
        return self._pairs


def run_commands(
    check: ConstantCheck, flag: list[float], pairs: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
) -> list[ConstantHit | None]:
    detector = CommandsDetector(pairs)
    hits: list[ConstantHit | None] = []
    for window in windows_of(flag):
        hits.extend(check.check(detector, [window]))
    return hits


@pytest.mark.parametrize("excursion", [[1.0], [1.0, 1.0]])
def test_a_first_pulse_like_its_siblings_is_read_as_theirs(excursion: list[float]) -> None:
    """Issue #21, spacecraft telemetry: a command channel whose command the training data
    happened not to hold, beside channels of commands it did, pulses from their rest to their
    value: no departure, not its first pulse either, and nothing learnt or audited."""
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    flag, pulses = pulsed(excursion, 5)
    assert flagged_pulses(run_commands(check, flag), pulses) == []
    assert check.drain_events() == []
    # without the siblings (or with sibling_pulses off) its first pulse alerts, as before
    for config, pairs in (
        (ConstantsConfig(relearn_after=6), ()),
        (ConstantsConfig(relearn_after=6, sibling_pulses=False), ((0.0, 1.0),)),
    ):
        alone = ConstantCheck(config, HOP)
        assert flagged_pulses(run_commands(alone, flag, pairs), pulses) == pulses[:1]


@pytest.mark.parametrize(
    ("excursion", "pairs"),
    [
        ([2.0], ((0.0, 1.0),)),  # a value none of its siblings pulsed to
        ([1.0], ((5.0, 1.0),)),  # siblings resting elsewhere
        ([1.0] * 3, ((0.0, 1.0),)),  # held longer than a pulse
    ],
)
def test_what_is_not_a_siblings_pulse_still_departs(
    excursion: list[float], pairs: tuple[tuple[float, float], ...]
) -> None:
    check = ConstantCheck(ConstantsConfig(relearn_after=6, accept_returns=0), HOP)
    flag, pulses = pulsed(excursion, 3)
    assert flagged_pulses(run_commands(check, flag, pairs), pulses) == pulses


def test_a_pulse_value_held_departs_from_its_first_reading_and_is_learnt_as_any() -> None:
    """A command channel that switches and stays at its siblings' pulse value is a flag that
    switched: flagged from the window that shows it held, learnt ``relearn_after`` readings
    after it began (not after the pulse's length), audited."""
    check = ConstantCheck(ConstantsConfig(relearn_after=6), HOP)
    hits = run_commands(check, [0.0] * 40 + [1.0] * 60)
    flagged = [i for i, h in enumerate(hits) if h is not None]
    # window i ends at reading i * HOP + WINDOW - 1: the first to hold three 1s (40-42)
    assert flagged[0] == (42 - (WINDOW - 1) + HOP - 1) // HOP
    assert flagged == list(range(flagged[0], flagged[-1] + 1))
    assert len(flagged) <= 6 // HOP + 1
    (event,) = check.drain_events()
    assert (event.kind, event.detail["value"], event.detail["returns"]) == (
        "constant_value_learnt",
        1.0,
        0,
    )
    assert event.at == 45.0  # its sixth reading: counted from reading 40, not from 42
