"""A channel's lagged response to a change of a stepped input -- a temperature settling to
a new set point, telemetry moving to a commanded level -- opens no alert by itself
(``Verdict.response``, ``sentinel.judge.alerts``; issue #21: a short training, or one that
never saw a set point, alerted at every step): windows that are anomalous by the score
alone and hold the input's change at or before their evidence's first reading. A channel
that does not settle keeps its error after the change has left the window, and alerts; one
whose error falls window by window after it is still settling, and does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.judge.alerts import AlertTracker
from sentinel.judge.noise import directed_roughness
from sentinel.records import Alert, NoiseHit, Score, SpikeHit, Verdict, Window
from sentinel.worker.pipeline import _responding

FEATURES: dict[str, tuple[str, ...]] = {"hvac": ("setpoint", "temperature")}
BASELINE = (0.0, 0.1)
LENGTH = 8


def verdict(
    end: float, anomalous: bool, response: bool = True, value: float | None = None
) -> Verdict:
    """A window of ``LENGTH`` readings ending at ``end``, anomalous ones by the score with
    their newest three readings as evidence."""
    window = Window("hvac", "a", end - LENGTH + 1, end, np.zeros((LENGTH, 2), dtype=np.float32))
    value = value if value is not None else (5.0 if anomalous else 0.5)
    score = Score(window, value, (0.0, 2.0), "v1")
    if not anomalous:
        return Verdict(score, threshold=1.0, is_anomaly=False)
    return Verdict(
        score, threshold=1.0, is_anomaly=True, evidence=(end - 2, end), response=response
    )


def feed(verdicts: list[Verdict]) -> list[Alert]:
    tracker = AlertTracker(AlertsConfig(open_after=2, close_after=2), FEATURES)
    return [a for v in verdicts if (a := tracker.observe(v, BASELINE)) is not None]


def test_a_response_opens_no_alert() -> None:
    quiet = [verdict(t, False) for t in (90.0, 92.0)]
    lag = [verdict(t, True) for t in (94.0, 96.0, 98.0, 100.0)]
    assert feed(quiet + lag + [verdict(t, False) for t in (102.0, 104.0, 106.0)]) == []


def test_a_channel_that_does_not_settle_alerts_once_the_change_is_out_of_its_windows() -> None:
    lag = [verdict(t, True) for t in (94.0, 96.0)]
    stays = [verdict(t, True, response=False) for t in (98.0, 100.0)]
    alerts = feed(lag + stays)
    assert alerts, "the run opens at its first window that is no response"
    # its onset: the earliest evidence of the opening run (the last open_after windows)
    assert alerts[0].started_at == 94.0


def test_a_channel_still_settling_after_the_change_left_the_window_opens_nothing() -> None:
    """The lag outlasts the window: the windows after the response run are no responses
    by themselves, but their scores fall one after another (``_settle``)."""
    lag = [verdict(t, True, value=v) for t, v in ((94.0, 30.0), (96.0, 20.0))]
    settling = [verdict(t, True, response=False, value=v) for t, v in ((98.0, 9.0), (100.0, 4.0))]
    after = [verdict(t, False) for t in (102.0, 104.0)]
    assert feed(lag + settling + after) == []
    # its last window scoring as high as the one before: the channel is not settling
    held = [verdict(t, True, response=False, value=v) for t, v in ((98.0, 9.0), (100.0, 9.0))]
    assert feed(lag + held), "an error that stops falling opens an alert"
    # a later run that no response began is judged as any other
    later = [verdict(t, True, response=False, value=v) for t, v in ((110.0, 9.0), (112.0, 4.0))]
    assert feed(lag + after + later), "settling ends with the run"


def test_a_check_beside_the_score_ends_the_settling() -> None:
    lag = [verdict(t, True, value=v) for t, v in ((94.0, 30.0), (96.0, 20.0))]
    spiking = [
        replace(
            verdict(t, True, response=False, value=v),
            spike=SpikeHit(feature=1, z=40.0, age=0),
        )
        for t, v in ((98.0, 9.0), (100.0, 4.0))
    ]
    assert feed(lag + spiking), "a spike while settling alerts"


def test_responding_is_a_change_of_an_input_with_nothing_anomalous_before_it() -> None:
    readings = np.zeros((8, 3), dtype=np.float32)
    readings[:, 1] = 20.0
    readings[5:, 0] = 22.0  # the set point stepped at reading 5
    readings[5:, 1] = np.linspace(20.0, 21.5, 3)  # the temperature follows
    # the newest 4 readings are scored (reading 4 first): errors after the step only
    lag = np.array([[0.0, 0.5], [0.0, 9.0], [0.0, 6.0], [0.0, 4.0]])
    assert _responding(readings, lag, 2.0, [0])
    # the evidence rule may take the readings before the step too (a lag's errors are
    # many): still a response while those readings on their own are normal
    assert _responding(readings, lag, 0.5, [0])
    # a channel already anomalous before the change is no response
    before = np.array([[0.0, 8.0], [0.0, 9.0], [0.0, 6.0], [0.0, 4.0]])
    assert not _responding(readings, before, 2.0, [0])
    # the change before every scored reading: all of them follow it
    early = readings.copy()
    early[2:, 0] = 22.0
    assert _responding(early, before, 2.0, [0])
    assert not _responding(readings, lag, 2.0, [2])  # that input did not move
    assert not _responding(readings, lag, 2.0, [])  # a model without stepped inputs


def rough(end: float, values: np.ndarray, value: float, response: bool = False) -> Verdict:
    """An anomalous window of the temperature's ``values``, the noise check beside its score."""
    window = Window(
        "hvac", "a", end - len(values) + 1, end, np.zeros((len(values), 2), dtype=np.float32)
    )
    window.values[:, 1] = values
    score = Score(window, value, (0.0, 2.0), "v1")
    return Verdict(
        score,
        threshold=1.0,
        is_anomaly=True,
        evidence=(end - 2, end),
        response=response,
        noise=NoiseHit(feature=1, ratio=3.0, exceedance=0.001),
    )


def test_the_noise_check_on_a_channel_moving_one_way_is_its_settling() -> None:
    """A large step's lag is rougher, by the median step, than any window of a training
    that held few such steps: the noise check fires beside the score on the temperature
    that closes on its set point, and that is the settling (``directed_roughness``); a
    burst of noise moves either way, and alerts."""
    rng = np.random.default_rng(3)
    ramp = 35.0 + 15.0 * (1 - np.exp(-np.arange(LENGTH) / 20.0)) + rng.normal(0, 0.05, LENGTH)
    burst = 50.0 + rng.normal(0.0, 2.0, LENGTH)
    assert directed_roughness(rough(100.0, ramp, 9.0))
    assert not directed_roughness(rough(100.0, burst, 9.0))
    assert not directed_roughness(rough(100.0, np.full(LENGTH, 50.0), 9.0))  # nothing moved
    assert not directed_roughness(verdict(100.0, True))  # no noise hit at all
    spiked = replace(rough(100.0, ramp, 9.0), spike=SpikeHit(feature=1, z=40.0, age=0))
    assert not directed_roughness(spiked), "another check beside it is evidence"
    lag = [verdict(t, True, value=v) for t, v in ((94.0, 30.0), (96.0, 20.0))]
    settling = [rough(t, ramp, v) for t, v in ((98.0, 9.0), (100.0, 4.0))]
    assert feed(lag + settling + [verdict(t, False) for t in (102.0, 104.0)]) == []
    bursting = [rough(t, burst, v) for t, v in ((98.0, 9.0), (100.0, 4.0))]
    assert feed(lag + bursting), "a noise burst while settling alerts"
