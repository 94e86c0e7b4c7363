"""One reading's forecast miss that every channel took together opens no alert by itself
(``sentinel.judge.alerts``, issue #21: a pump's load step moves every channel at once; the
forecaster misses the step's reading, and overlapping windows let that one reading meet
``open_after`` alone). Whether the channels moved together is the device's relations' say
(``Relations.moved_together``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sentinel.config import AlertsConfig
from sentinel.judge.alerts import AlertTracker
from sentinel.judge.relations import Relations, fit_relations
from sentinel.model import Calibration
from sentinel.records import Alert, RelationHit, Score, Verdict, Window
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector

FEATURES: dict[str, tuple[str, ...]] = {"pump": ("flow", "pressure", "current")}
BASELINE = (0.1, 0.1, 0.1)
LENGTH = 8  # readings a window, one second apart
BROKEN = RelationHit(1, 5.0, 1e-6)


def verdict(
    end: float,
    anomalous: bool,
    evidence: tuple[float, float] | None = None,
    joint: bool = True,
) -> Verdict:
    """A window of ``LENGTH`` readings ending at ``end``; anomalous ones by the score, with
    ``evidence`` (default: the newest reading)."""
    window = Window("pump", "a", end - LENGTH + 1, end, np.zeros((LENGTH, 3), dtype=np.float32))
    score = Score(window, 5.0 if anomalous else 0.5, (0.1, 2.0, 0.1), "v1")
    if not anomalous:
        return Verdict(score, threshold=1.0, is_anomaly=False)
    return Verdict(
        score, threshold=1.0, is_anomaly=True, evidence=evidence or (end, end), joint=joint
    )


def feed(verdicts: list[Verdict]) -> list[Alert]:
    tracker = AlertTracker(AlertsConfig(open_after=2, close_after=2), FEATURES)
    return [a for v in verdicts if (a := tracker.observe(v, BASELINE)) is not None]


def joint_step(at: float, joint: bool = True) -> list[Verdict]:
    """Windows at hop 2 whose only evidence is the reading at ``at``, by the score."""
    return [verdict(at + k, True, (at, at), joint) for k in (0, 2, 4)]


def test_one_readings_miss_with_the_relations_holding_opens_no_alert() -> None:
    quiet = [verdict(t, False) for t in (92.0, 94.0, 96.0)]
    after = [verdict(t, False) for t in (106.0, 108.0, 110.0, 112.0)]
    assert feed(quiet + joint_step(100.0) + after) == []


def test_a_miss_not_taken_together_opens_one() -> None:
    """A univariate stream's step (a set point, a level shift) is one reading's miss too,
    and there nothing says the device's channels moved together; nor where one channel
    jumped alone: it alerts."""
    alerts = feed(joint_step(100.0, joint=False))
    assert len(alerts) == 2  # opened, then updated
    assert alerts[0].started_at == 100.0


def test_a_miss_spread_over_readings_opens_one() -> None:
    spread = [verdict(t, True, (t - 3, t), joint=False) for t in (100.0, 102.0)]
    assert feed(spread)[0].started_at == 97.0


def test_two_readings_missed_in_turn_open_one() -> None:
    """Each window's evidence one reading taken together, but not the same one: a fault
    going on."""
    assert feed([verdict(t, True, (t, t)) for t in (100.0, 102.0)])[0].started_at == 100.0


def test_a_ramp_missed_over_readings_taken_together_opens_no_alert() -> None:
    """Read every second, a load change is a ramp over several readings: each window's
    evidence a span the channels moved across together, the spans sharing readings."""
    ramp = [verdict(t, True, (95.0, min(t, 104.0))) for t in (100.0, 102.0, 104.0, 106.0)]
    assert feed(ramp) == []
    # spans taken together that share no reading are two moves, not one: as above
    apart = [verdict(100.0, True, (95.0, 98.0)), verdict(102.0, True, (100.0, 102.0))]
    assert feed(apart)[0].started_at == 95.0


def test_a_fault_after_the_miss_alerts_from_its_own_evidence() -> None:
    gap = [verdict(t, False) for t in (106.0, 108.0)]
    fault = [replace(verdict(t, True), relation=BROKEN) for t in (110.0, 112.0)]
    alerts = feed(joint_step(100.0) + gap + fault)
    assert alerts[0].started_at == 110.0


def pump_fit(rng: np.random.Generator) -> tuple[Relations, np.ndarray]:
    """A pump's relations (flow, pressure and current follow its load), fitted on 400
    window means, and one window of 32 readings at a steady load."""

    def readings(load: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(load), 3))
        return np.column_stack(
            [
                50.0 * load + 0.5 * noise[:, 0],
                2.0 + 3.0 * load + 0.05 * noise[:, 1],
                10.0 + 20.0 * load + 0.2 * noise[:, 2],
            ]
        )

    means = np.stack([readings(np.full(32, x)).mean(axis=0) for x in rng.uniform(0.3, 1.0, 400)])
    fit = fit_relations(means, noise=np.array([0.1, 0.01, 0.04]), quantile=0.995)
    assert fit is not None
    return fit, readings(np.full(32, 0.5))


def test_a_load_step_is_taken_together_and_one_channels_jump_is_not() -> None:
    fit, window = pump_fit(np.random.default_rng(3))
    assert fit.judged == 3
    at = 24
    step = window.copy()
    step[at:] += np.array([50.0, 3.0, 20.0]) * 0.3  # the load 0.5 -> 0.8: every channel
    assert fit.moved_together(step, at, 0)
    jump = window.copy()
    jump[at:, 2] += 3.0  # the current alone, 15 of its noise's deviations, and it stays
    assert not fit.moved_together(jump, at, 2)
    # a reading at which nothing moved, or only the channel missed: nothing to vouch for it
    assert not fit.moved_together(window, at, 1)
    one = window.copy()
    one[at:, 0] += 15.0  # flow alone (its relation to the others breaks as well)
    assert not fit.moved_together(one, at, 0)
    # the missed feature must be one the relations judge
    unjudged = replace(fit, inverse=np.array([fit.inverse[0], fit.inverse[1], 0.0]))
    assert not fit.moved_together(step, 0, 0)  # no reading before the first to jump from
    assert not unjudged.moved_together(step, at, 2)


def test_a_load_ramp_is_taken_together_and_one_channels_drift_is_not() -> None:
    """Across a span of readings (a ramp read every second) the net change is judged as one
    reading's jump is: every channel moved, no residual did."""
    fit, window = pump_fit(np.random.default_rng(5))
    first, last = 12, 27
    ramp = window.copy()
    share = np.clip((np.arange(len(ramp)) - first + 1) / (last - first + 1), 0.0, 1.0)
    ramp += share[:, None] * np.array([50.0, 3.0, 20.0]) * 0.3  # the load 0.5 -> 0.8
    # no reading-to-reading change of the ramp stands out of the noise by itself ...
    assert not fit.moved_together(ramp, first + 8, 0)
    # ... while across the ramp every channel moved together
    assert fit.moved_together(ramp, first, 0, last)
    assert fit.moved_together(ramp, first, 2, last)
    drift = window.copy()
    drift[:, 2] += share * 3.0  # the current alone, over the same readings
    assert not fit.moved_together(drift, first, 2, last)
    # the ramp with the current drifting off it: its residual moved
    both = ramp.copy()
    both[:, 2] += share * 3.0
    assert not fit.moved_together(both, first, 0, last)
    # a span out of the window's readings, or backwards, vouches for nothing
    assert not fit.moved_together(ramp, last, 0, first)
    assert not fit.moved_together(ramp, first, 0, len(ramp))


def test_a_ramp_a_lagging_channel_has_not_followed_yet_is_taken_together() -> None:
    """A winding temperature follows the load through a lag of minutes: read every second,
    it has not moved when the ramp is over, and its prediction from the others moved with
    them. It did not move, so its residual is not asked to hold; the channel the
    forecaster missed, and those that moved, still are."""
    rng = np.random.default_rng(11)

    def readings(load: np.ndarray, temperature: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(load), 4))
        return np.column_stack(
            [
                50.0 * load + 0.5 * noise[:, 0],
                2.0 + 3.0 * load + 0.05 * noise[:, 1],
                10.0 + 20.0 * load + 0.2 * noise[:, 2],
                temperature + 0.05 * noise[:, 3],
            ]
        )

    # learnt at rest: the temperature settled at 30 + 10 x load, give or take 0.3 degrees
    loads = rng.uniform(0.3, 1.0, 400)
    means = np.stack(
        [
            readings(np.full(32, x), np.full(32, 30.0 + 10.0 * x + rng.normal(0.0, 0.3))).mean(
                axis=0
            )
            for x in loads
        ]
    )
    fit = fit_relations(means, noise=np.array([0.1, 0.01, 0.04, 0.01]), quantile=0.995)
    assert fit is not None
    assert fit.judged == 4
    first, last = 12, 27
    share = np.clip((np.arange(32) - first + 1) / (last - first + 1), 0.0, 1.0)
    ramp = readings(0.5 + 0.3 * share, np.full(32, 35.0))  # the temperature still at 35
    residual = fit.residuals(ramp)[:, 3]
    assert abs(residual[last] - residual[first - 1]) > 1.5  # its prediction rose with the load
    assert fit.moved_together(ramp, first, 0, last)
    assert fit.moved_together(ramp, first, 1, last)
    # the forecaster missing the temperature itself: its own residual is asked, and moved
    assert not fit.moved_together(ramp, first, 3, last)
    # the current not following the ramp: a channel that moved no longer does alone
    stalled = ramp.copy()
    stalled[:, 2] = ramp[first - 1, 2] + 0.2 * rng.standard_normal(32)
    assert not fit.moved_together(stalled, first, 2, last)


def test_a_ramps_end_is_taken_together_from_its_lead() -> None:
    """Read every second, the forecaster can miss a ramp at a reading near its end whose
    change since the one before is inside the noise: from a quarter of a window before,
    the channels' move together stands out (``Relations.ramped_together``)."""
    fit, window = pump_fit(np.random.default_rng(5))
    first, last = 12, 27
    share = np.clip((np.arange(len(window)) - first + 1) / (last - first + 1), 0.0, 1.0)
    ramp = window + share[:, None] * np.array([50.0, 3.0, 20.0]) * 0.3
    missed = 25  # the forecaster's miss: two readings before the ramp's end
    assert not fit.moved_together(ramp, missed, 0, missed + 1)
    assert fit.ramped_together(ramp, missed, 0, missed + 1)
    assert fit.ramped_together(ramp, missed, 2, missed + 1)
    drift = window.copy()
    drift[:, 2] += share * 3.0  # the current alone, over the same readings
    assert not fit.ramped_together(drift, missed, 2, missed + 1)
    # nothing before the window's second reading to look back to
    assert not fit.ramped_together(ramp, 1, 0)


def test_slow_channels_do_not_vouch_for_another_channels_miss() -> None:
    """Over a ramp's lead a channel that always drifts slowly (a memory's sawtooth, a cache
    that fills) moves beyond its reading-to-reading noise: taken with the missed channel
    left out, two such channels would vouch for a disk storm's writes missed at their own
    level (``simulators.synthetic.wide_server``, seed 4: its storm went unseen)."""
    rng = np.random.default_rng(7)

    def readings(level: np.ndarray, load: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(level), 4))
        writes = 15.0 + 60.0 * load + 4.0 * noise[:, 2]
        return np.column_stack(
            [
                40.0 + level + 0.002 * noise[:, 0],  # memory
                10.0 + 0.5 * level + 0.002 * noise[:, 1],  # page cache
                writes,
                2.0 + 0.3 * writes + 0.5 * noise[:, 3],  # disk busy
            ]
        )

    means = np.stack(
        [
            readings(np.full(32, x), np.full(32, y)).mean(axis=0)
            for x, y in zip(rng.uniform(0.0, 5.0, 400), rng.uniform(0.0, 1.0, 400), strict=True)
        ]
    )
    fit = fit_relations(means, noise=np.array([1e-3, 1e-3, 0.7, 0.1]), quantile=0.995)
    assert fit is not None
    assert fit.judged == 4
    # memory and cache rise slowly through the window, the writes hold a high level
    window = readings(np.linspace(2.0, 2.3, 32), np.full(32, 1.0))
    at = 28
    start = at - len(window) // 4
    assert fit.moved_together(window, start, 2, at + 1)  # the slow pair alone vouches
    assert not fit.ramped_together(window, at, 2, at + 1)  # the writes did not move


class RampMissed(FakeDetector):
    """A forecaster's per-reading errors (``step_ratios``) over the newest 16 readings of a
    window of pump channels: 5 on the flow at ``missed`` readings, 0.5 elsewhere."""

    def __init__(self, missed: range) -> None:
        super().__init__()
        self._meta = replace(
            self._meta,
            features=("flow", "pressure", "current"),
            window=32,
            calibration=Calibration({"0.995": 1.0}, 1.0, (0.0, 0.0, 0.0)),
        )
        self.missed = missed

    def step_ratios(self, windows: np.ndarray) -> np.ndarray:
        out = np.full((len(windows), 16, 3), 0.5)
        out[:, [i - 16 for i in self.missed], 0] = 5.0
        return out


def judged_by_pipeline(detector: RampMissed, fit: Relations, values: np.ndarray) -> Verdict:
    """One window of ``values``, anomalous by the score, through
    ``Pipeline._with_evidence``: its evidence and whether the channels took it together."""
    shown = Window("pump", "a", 0.0, 31.0, values.astype(np.float32))
    score = Score(shown, 5.0, (5.0, 0.5, 0.5), "v1")
    (out,) = Pipeline._with_evidence(
        detector, values[None], [Verdict(score, threshold=1.0, is_anomaly=True)], [fit]
    )
    return out


def test_the_pipeline_vouches_for_a_ramp_over_its_evidence_span() -> None:
    """``Pipeline._with_evidence`` judges the span the forecaster missed: the ramp's readings
    as one move, not its first reading alone (whose change does not stand out)."""
    fit, window = pump_fit(np.random.default_rng(5))
    first, last = 18, 29
    share = np.clip((np.arange(len(window)) - first + 1) / (last - first + 1), 0.0, 1.0)
    ramp = window + share[:, None] * np.array([50.0, 3.0, 20.0]) * 0.3
    drifting = ramp.copy()
    drifting[:, 2] += share * 3.0  # the current leaving the load over the same readings
    detector = RampMissed(range(first, last + 1))
    vouched = judged_by_pipeline(detector, fit, ramp)
    assert vouched.evidence is not None
    assert vouched.evidence[0] < vouched.evidence[1]  # a span, not one reading
    assert vouched.joint
    assert not judged_by_pipeline(detector, fit, drifting).joint


def test_the_pipeline_vouches_for_a_ramps_end_from_its_lead() -> None:
    """The forecaster missing two readings near a ramp's end, each change inside the
    noise: ``Pipeline._with_evidence`` looks back a quarter of the window for the move."""
    fit, window = pump_fit(np.random.default_rng(5))
    first, last = 14, 29
    share = np.clip((np.arange(len(window)) - first + 1) / (last - first + 1), 0.0, 1.0)
    ramp = window + share[:, None] * np.array([50.0, 3.0, 20.0]) * 0.3
    drifting = window.copy()
    drifting[:, 0] += share * 15.0  # the flow leaving the others over the same readings
    detector = RampMissed(range(26, 28))
    vouched = judged_by_pipeline(detector, fit, ramp)
    assert vouched.evidence is not None
    lo, hi = (int(t) for t in vouched.evidence)
    assert 26 <= lo <= hi <= 27  # the evidence stays what was missed ...
    assert not fit.moved_together(ramp, lo, 0, hi)  # ... where nothing stands out
    assert vouched.joint
    assert not judged_by_pipeline(detector, fit, drifting).joint


def usual(at: float) -> list[Verdict]:
    """Windows at hop 2 whose only evidence, by the score, is the reading at ``at``: an
    excursion the spike check knows as the device's normal in all but the first, which
    saw it among its newest readings, before the check could judge it."""
    return [verdict(at, True, (at, at), joint=False)] + [
        replace(verdict(at + k, True, (at, at), joint=False), usual=True) for k in (2, 4)
    ]


def test_a_known_excursion_the_score_alone_saw_opens_no_alert() -> None:
    """Heavy-tailed noise: an outlier of ten scales every few hundred readings is the
    device's normal to the spike check, and the score, judging the reading again without
    that memory, alerted at every one (``simulators.unseen.heavy_tails``)."""
    quiet = [verdict(t, False) for t in (92.0, 94.0, 96.0)]
    after = [verdict(t, False) for t in (106.0, 108.0, 110.0, 112.0)]
    assert feed(quiet + usual(100.0) + after) == []
    # evidence beyond the known reading (a fault going on after it) is its own
    beyond = usual(100.0)
    beyond[1] = replace(beyond[1], evidence=(100.0, 102.0), usual=False)
    assert feed(quiet + beyond + after)[0].started_at == 100.0
    # and a window not vouched for whose evidence is another reading
    other = [verdict(98.0, True, (98.0, 98.0), joint=False), *usual(100.0)[1:]]
    assert feed(quiet + other + after)[0].started_at == 98.0


def test_the_pipeline_vouches_for_a_known_excursion_and_its_echo_only() -> None:
    """``Pipeline._with_evidence``: the score's evidence one reading of the feature that
    made the score, which the spike check reported as usual (``SpikeCheck.check``), and
    at most ``echo`` readings after it."""
    window = np.random.default_rng(7).standard_normal((32, 3))

    def judged(
        missed: range, known: frozenset[tuple[int, int]], relation: RelationHit | None = None
    ) -> Verdict:
        shown = Window("pump", "a", 0.0, 31.0, window.astype(np.float32))
        score = Score(shown, 5.0, (5.0, 0.5, 0.5), "v1")
        verdict = Verdict(score, threshold=1.0, is_anomaly=True, relation=relation)
        (out,) = Pipeline._with_evidence(
            RampMissed(missed), window[None], [verdict], [None], usual=[known], echo=3
        )
        return out

    assert judged(range(24, 25), frozenset({(24, 0)})).usual
    assert judged(range(24, 27), frozenset({(24, 0)})).usual  # the forecaster's echo
    going_on = judged(range(20, 32), frozenset({(20, 0)}))  # a fault going on after it
    assert going_on.evidence is not None
    assert going_on.evidence[1] - going_on.evidence[0] > 3
    assert not going_on.usual
    assert not judged(range(24, 25), frozenset({(24, 1)})).usual  # another feature's
    assert not judged(range(24, 25), frozenset({(23, 0)})).usual  # another reading's
    assert not judged(range(24, 25), frozenset()).usual
    assert not judged(range(24, 25), frozenset({(24, 0)}), relation=BROKEN).usual
