"""Anomalous spells and the threshold (issue #21): a fault's milder windows, which score
under a threshold they raise, are forgotten when the fault ends, so the next fault is judged
against the threshold the device had before the first; a change that stays keeps what it
taught, as before."""

from __future__ import annotations

import numpy as np
import pytest

from sentinel.config import ThresholdConfig
from sentinel.judge.threshold import ThresholdBank
from sentinel.records import Score, Verdict, Window
from tests.judge.helpers import detail_number, with_model

WINDOW, HOP = 32, 4  # readings a window, readings between windows; one reading a second


class Device:
    """One device's windows, every HOP seconds, each WINDOW readings long."""

    def __init__(self, bank: ThresholdBank) -> None:
        self.bank = bank
        self.end = float(WINDOW - 1)

    def judge(self, values: np.ndarray) -> list[Verdict]:
        verdicts = []
        for value in values.tolist():
            window = Window(
                "pump", "a", self.end - (WINDOW - 1), self.end, np.zeros((2, 1), np.float32)
            )
            verdicts.append(self.bank.judge(Score(window, value, (value,), "v1")))
            self.end += HOP
        return verdicts


def bank(**overrides: object) -> ThresholdBank:
    """The default quantile method (0.995 x 1.5), warm after 200 normal windows."""
    config = ThresholdConfig.model_validate({"prior_windows": 0, **overrides})
    return with_model(ThresholdBank(config), 10.0)


RNG = np.random.default_rng(7)
NORMAL = RNG.uniform(0.5, 1.5, 3_000)
# a fault of 300 readings (75 windows) whose windows score from about the threshold (1.5 x
# the normal top: 2.2) to twice it: the milder ones are judged normal and taught it
FAULT = RNG.uniform(1.8, 4.5, 75)


def run(device: Device, *parts: np.ndarray) -> list[list[Verdict]]:
    return [device.judge(part) for part in parts]


def test_a_faults_milder_windows_are_forgotten_when_it_ends() -> None:
    thresholds = {}
    caught = {}
    for forget in (True, False):
        device = Device(bank(forget_spells=forget))
        before, first, after, second, _ = run(
            device, NORMAL[:400], FAULT, NORMAL[400:575], FAULT, NORMAL[575:600]
        )
        thresholds[forget] = (before[-1].threshold, after[-1].threshold)
        caught[forget] = (sum(v.is_anomaly for v in first), sum(v.is_anomaly for v in second))
        events = device.bank.drain_events()
        forgotten = [e for e in events if e.kind == "threshold_spell_forgotten"]
        if not forget:
            assert forgotten == []
            continue
        assert len(forgotten) == 2  # each fault, once over
        assert detail_number(forgotten[0], "forgotten") > 0
        assert detail_number(forgotten[0], "threshold_before") == pytest.approx(
            before[-1].threshold
        )
    # before: the first fault raised the threshold 3-fold, and the second went unseen
    old_before, old_after = thresholds[False]
    assert old_after > 2.5 * old_before
    assert caught[False][1] == 0 < caught[False][0]
    # now: what the fault's windows above the threshold it met taught is forgotten (those
    # under it stay: the device's normal top) and the second fault is seen
    new_before, new_after = thresholds[True]
    assert new_before == pytest.approx(old_before)
    assert new_after < 1.5 * new_before
    assert caught[True][1] >= 10


def test_a_change_that_stays_keeps_what_it_taught() -> None:
    """A new normal: the device scores higher from now on. The threshold follows it as it
    did, and nothing is forgotten (its windows never come back to the usual level)."""
    higher = np.concatenate([FAULT, RNG.uniform(1.8, 4.5, 300)])
    ends = {}
    for forget in (True, False):
        device = Device(bank(forget_spells=forget))
        _, changed = run(device, NORMAL[:400], higher)
        ends[forget] = (changed[-1].threshold, sum(v.is_anomaly for v in changed))
        assert not [e for e in device.bank.drain_events() if e.kind == "threshold_spell_forgotten"]
    assert ends[True] == ends[False]


def test_a_blip_and_a_normal_step_teach_what_they_did() -> None:
    """One anomalous window, then windows under the threshold it met: nothing they taught
    was above it, nothing is forgotten (a normal set point step's milder windows are the
    device's normal)."""
    blip = np.concatenate([[5.0], RNG.uniform(1.0, 1.4, 20)])
    ends = {}
    for forget in (True, False):
        device = Device(bank(forget_spells=forget))
        _, after, later = run(device, NORMAL[:400], blip, NORMAL[400:450])
        assert after[0].is_anomaly
        assert not any(v.is_anomaly for v in after[1:])
        assert not [e for e in device.bank.drain_events() if e.kind == "threshold_spell_forgotten"]
        ends[forget] = later[-1].threshold
    assert ends[True] == ends[False]
