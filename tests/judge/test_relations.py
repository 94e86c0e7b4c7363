"""The relation check: a feature whose window mean leaves its relations to the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import RelationsConfig, SpikesConfig, ThresholdConfig
from sentinel.judge import relations
from sentinel.judge.relations import RelationCheck, Relations, _Device, fit_relations
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.records import AlertReason, RelationHit, ThresholdState, Window
from sentinel.worker.snapshots import ThresholdSnapshots
from tests.fakes import FakeDetector

T = 16  # readings per window


class Pump:
    """Three channels that follow one load (flow, pressure ~ flow^2, current ~ load) with
    sensor noise, and a fourth, independent of the load (an ambient temperature)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.t = 0.0

    def window(self, load: float, offset: tuple[float, ...] = (0.0,) * 4) -> np.ndarray:
        n = self.rng.standard_normal((T, 4))
        flow = 50.0 * load + 0.5 * n[:, 0]
        pressure = 1.0 + 3.0 * load * load + 0.03 * n[:, 1]
        current = 10.0 + 20.0 * load + 0.2 * n[:, 2]
        ambient = 20.0 + 0.1 * n[:, 3] + self.rng.normal(0.0, 0.5)
        out: np.ndarray = np.column_stack([flow, pressure, current, ambient]) + np.asarray(offset)
        return out


class ConstantsDetector(FakeDetector):
    """A model that found the features ``constant`` constant in its training data."""

    def __init__(self, constant: dict[int, float] | None = None) -> None:
        super().__init__()
        self._constant = constant or {}

    def constant_values(self) -> dict[int, float]:
        return self._constant


MODEL = ConstantsDetector()


def as_windows(device: str, values: list[np.ndarray], t0: float = 0.0) -> list[Window]:
    return [
        Window("pumps", device, t0 + i * T, t0 + i * T + T - 1, v) for i, v in enumerate(values)
    ]


def feed(
    check: RelationCheck, device: str, values: list[np.ndarray], model: FakeDetector = MODEL
) -> list[RelationHit | None]:
    """Check then learn the windows judged normal by the check itself, as the pipeline does
    when no other check fires."""
    windows = as_windows(device, values)
    stacked = np.stack(values)
    hits = check.check(model, windows, stacked)
    check.learn(model, windows, stacked, [h is None for h in hits], hits)
    return hits


def loads(rng: np.random.Generator, n: int) -> np.ndarray:
    # a drive switching between load levels, with demand noise
    levels = rng.choice([0.55, 0.7, 0.85, 1.0], size=n // 8 + 1).repeat(8)[:n]
    return levels * (1.0 + 0.02 * rng.standard_normal(n))


def trained(config: RelationsConfig | None = None, seed: int = 0) -> tuple[RelationCheck, Pump]:
    check = RelationCheck(config or RelationsConfig(), hop=4)
    pump = Pump(seed)
    rng = np.random.default_rng(seed + 100)
    hits = feed(check, "p1", [pump.window(x) for x in loads(rng, 400)])
    assert all(h is None for h in hits[:64])  # nothing is judged while warming up
    return check, pump


def test_a_load_change_is_normal_but_one_channel_moving_alone_is_not() -> None:
    check, pump = trained()
    rng = np.random.default_rng(7)
    normal = feed(check, "p1", [pump.window(x) for x in loads(rng, 200)])
    assert sum(h is not None for h in normal) <= 1
    # Flow reads 5 m3/h low (a tenth of its range over the loads, 10 readings' noise): a
    # lower load would read so too, but pressure and current did not follow.
    shifted = feed(check, "p1", [pump.window(0.8, (-5.0, 0, 0, 0)) for _ in range(4)])
    assert all(h is not None and h.feature == 0 for h in shifted)
    assert all(h.z > RelationsConfig().k and 0 < h.exceedance < 1e-6 for h in shifted if h)
    # The current no longer tracks the load (a dragging bearing): named too.
    drag = feed(check, "p1", [pump.window(0.7, (0, 0, 2.0, 0)) for _ in range(4)])
    assert all(h is not None and h.feature == 2 for h in drag)


def test_anomalous_windows_teach_nothing_and_a_lasting_break_is_relearnt() -> None:
    check, pump = trained()
    after = 40 * T  # seconds: 40 windows, T seconds apart (see as_windows)

    def broken(n: int, t0: float) -> list[RelationHit | None]:
        values = [pump.window(0.8, (-5.0, 0, 0, 0)) for _ in range(n)]
        windows = as_windows("p1", values, t0)
        stacked = np.stack(values)
        hits = check.check(MODEL, windows, stacked, relearn_after=after)
        check.learn(MODEL, windows, stacked, [h is None for h in hits], hits)
        return hits

    hits = broken(40, 0.0)  # 39 windows after the first hit: not yet
    assert all(h is not None for h in hits)
    assert check.drain_events() == []
    assert broken(1, 40 * T)[0] is not None
    (event,) = check.drain_events()
    assert (event.kind, event.device) == ("relations_relearnt", "p1")
    assert (event.detail["windows"], event.detail["hit_windows"]) == (41, 41)
    # Afresh: nothing is judged until the new relations are learnt.
    rng = np.random.default_rng(3)
    again = feed(check, "p1", [pump.window(x, (-5.0, 0, 0, 0)) for x in loads(rng, 100)])
    assert all(h is None for h in again[:64])
    assert sum(h is not None for h in again[64:]) <= 1


def test_a_break_that_comes_and_goes_is_not_a_new_normal() -> None:
    check, pump = trained()
    values = [pump.window(0.8, (-5.0 * (i % 3 == 0), 0, 0, 0)) for i in range(200)]
    windows = as_windows("p1", values)
    stacked = np.stack(values)
    hits = check.check(MODEL, windows, stacked, relearn_after=40 * T)
    assert sum(h is not None for h in hits) >= 60  # a third of them, for 200 windows
    assert check.drain_events() == []  # never mostly broken


def test_devices_have_their_own_relations() -> None:
    check, pump = trained()
    other = Pump(seed=5)
    rng = np.random.default_rng(9)
    # p2's flow sensor reads 8 m3/h high from the start: its own normal.
    hits = feed(check, "p2", [other.window(x, (8.0, 0, 0, 0)) for x in loads(rng, 300)])
    assert sum(h is not None for h in hits) <= 1
    assert feed(check, "p1", [pump.window(0.8, (8.0, 0, 0, 0))])[0] is not None


def test_nothing_is_judged_without_two_varying_features_or_when_off() -> None:
    rng = np.random.default_rng(1)
    check = RelationCheck(RelationsConfig(), hop=4)
    one = [rng.normal(size=(T, 1)) for _ in range(200)]
    stacked = np.stack(one)
    assert check.check(MODEL, as_windows("u", one), stacked) == [None] * 200
    check.learn(MODEL, as_windows("u", one), stacked, [True] * 200, [None] * 200)
    assert check.check(MODEL, as_windows("u", one), stacked) == [None] * 200
    # A varying feature beside a constant one: no relation to judge.
    pair = [np.column_stack([rng.normal(size=T), np.full(T, 3.0)]) for _ in range(200)]
    feed(check, "c", pair)
    assert feed(check, "c", [np.column_stack([np.full(T, 9.0), np.full(T, 3.0)])]) == [None]
    off, pump = trained(RelationsConfig())
    off.reconfigure(RelationsConfig(enabled=False), hop=4)
    assert feed(off, "p1", [pump.window(0.8, (-5.0, 0, 0, 0))]) == [None]


def test_a_parked_device_keeps_its_relations() -> None:
    check, pump = trained()
    assert check.park(keep=set()) == 1
    assert check.stats()["devices"] == 0
    assert feed(check, "p1", [pump.window(0.8, (-5.0, 0, 0, 0))])[0] is not None


def test_fit_floors_the_scale_of_an_exact_relation() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 1))
    means = np.hstack([x, 2.0 * x])  # y is exactly 2x: residuals are float noise
    fit = fit_relations(means, noise=np.array([0.01, 0.02]), quantile=0.995)
    assert fit is not None
    assert np.all(fit.inverse <= 1.0 / 0.01 + 1e-9)
    z = fit.z(np.array([[1.0, 2.0 + 0.02]]), reach=0.0)
    # one window-mean noise off is about one scale off (the ridge shrinks the fit a little),
    # where an unfloored scale of float noise would make it 10^12
    assert 0.5 < z[0, 1] < 2.0


def test_alert_reason_keeps_the_relation() -> None:
    state = ThresholdState("quantile", 0.5, 300, None, True)
    reason = AlertReason(state, 1e-9, "abc", relation=("flow", 12.5))
    assert AlertReason.from_dict(reason.to_dict()).relation == ("flow", 12.5)


def test_features_constant_in_training_are_left_to_the_constant_check() -> None:
    # A command flag constant in the model's training (index 3) that switches later, its
    # new values accepted by the constant check: learnt windows hold it varying, but it is
    # neither judged nor used, so the flag switching back is not a broken relation.
    model = ConstantsDetector({3: 0.0})
    check = RelationCheck(RelationsConfig(), hop=4)
    pump = Pump()
    rng = np.random.default_rng(4)
    flag = [
        pump.window(x, (0, 0, 0, float(i // 40 % 2) * 50)) for i, x in enumerate(loads(rng, 400))
    ]
    hits = feed(check, "p1", flag, model)
    assert all(h is None or h.feature != 3 for h in hits)
    assert feed(check, "p1", [pump.window(0.8, (0, 0, 0, 0))], model)[0] is None
    # The rest is judged as ever.
    assert feed(check, "p1", [pump.window(0.8, (-10.0, 0, 0, 0))], model)[0] is not None
    # Another model that trained on the flag varying: refitted with it before judging.
    assert feed(check, "p1", [pump.window(0.8, (-10.0, 0, 0, 0))], MODEL)[0] is None


def test_an_operating_point_never_learnt_is_not_judged() -> None:
    # Learnt at loads 0.55-0.75 only: at full load the curved pressure is extrapolated, and
    # a linear fit would call every window there broken.
    check = RelationCheck(RelationsConfig(), hop=4)
    pump = Pump()
    rng = np.random.default_rng(8)
    part = [pump.window(x) for x in rng.uniform(0.55, 0.75, size=300)]
    assert all(h is None for h in feed(check, "p1", part)[64:])
    full = [pump.window(1.0) for _ in range(8)]
    assert feed(check, "p1", full) == [None] * 8
    ungated = RelationCheck(RelationsConfig(reach=0.0), hop=4)
    feed(ungated, "p1", part)
    assert all(h is not None for h in feed(ungated, "p1", full))
    # A fault inside the learnt span is still judged.
    assert feed(check, "p1", [pump.window(0.65, (0, 0, 2.0, 0))])[0] is not None


def test_an_operating_point_the_device_moves_to_is_judged_after_a_refit() -> None:
    """A pump that moves to a load its learnt windows never held is not judged there (its
    predictions would be extrapolated) until a refit holds windows at it. Refitted every 64
    windows, a drag of the current 32 windows after the move went unseen (docs/BENCHMARKS.md,
    "Refitting the relations every 16 windows": a fleet pump read every 5 s went 21 minutes
    unjudged after a load change); every 16, it is found, and the normal windows at the new
    load raise nothing."""
    for refit, found in ((RelationsConfig().refit, True), (64, False)):
        check = RelationCheck(RelationsConfig(refit=refit), hop=4)
        pump = Pump()
        rng = np.random.default_rng(8)
        feed(check, "p1", [pump.window(x) for x in rng.uniform(0.55, 0.75, size=260)])
        moved = feed(check, "p1", [pump.window(x) for x in rng.uniform(0.95, 1.0, size=32)])
        assert moved == [None] * 32
        drag = feed(check, "p1", [pump.window(0.97, (0, 0, 2.0, 0)) for _ in range(2)])
        assert [h is not None and h.feature == 2 for h in drag] == [found] * 2


def test_the_feature_that_moved_is_named_not_its_partner() -> None:
    # Flow and current both follow the load linearly; pressure (curved, but precise) tells
    # which of the two left it. Out of reach off: every residual is judged.
    check, pump = trained(RelationsConfig(reach=0.0))
    for feature, offset in ((0, (-5.0, 0, 0, 0)), (2, (0, 0, 2.0, 0))):
        hits = feed(check, "p1", [pump.window(0.8, offset) for _ in range(4)])
        assert [h.feature if h else None for h in hits] == [feature] * 4


def test_snapshot_and_restore_keep_a_device_judging() -> None:
    check, pump = trained()
    saved = check.snapshot("pumps")
    assert set(saved) == {"p1"}
    restarted = RelationCheck(RelationsConfig(), hop=4)
    assert restarted.restore("pumps", saved, 4) == 1
    assert feed(restarted, "p1", [pump.window(0.8, (-5.0, 0, 0, 0))])[0] is not None
    assert feed(restarted, "p1", [pump.window(0.8)])[0] is None
    with pytest.raises(ValueError, match="relations"):
        RelationCheck(RelationsConfig(), hop=4).restore("pumps", saved, 3)


def test_thresholds_json_carries_the_relations_across_a_restart(tmp_path: Path) -> None:
    check, pump = trained()
    path = tmp_path / "thresholds.json"
    before = ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), 4), relations=check
    )
    before.save({"pumps": "v1"})
    assert "p1" in json.loads(path.read_text())["streams"]["pumps"]["relations"]
    restarted = RelationCheck(RelationsConfig(), hop=4)
    after = ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), SpikeCheck(SpikesConfig(), 4), relations=restarted
    )
    after.restore({"pumps": ("v2", 4)})  # another model: the relations are the device's
    assert feed(restarted, "p1", [pump.window(0.8, (-5.0, 0, 0, 0))])[0] is not None


def test_command_flags_that_switch_now_and_then_are_not_judged() -> None:
    # Telemetry-like: one continuous channel and ten on/off commands, each on a few times,
    # none related to anything. A fit on the few switches it saw would call later ones
    # broken; the flags are constant inside most windows, so they are used, not judged.
    rng = np.random.default_rng(1)
    n = 12_000
    tele = np.sin(2 * np.pi * np.arange(n) / 500) + 0.05 * rng.standard_normal(n)
    flags = np.zeros((n, 10))
    for c in range(10):
        for start in rng.integers(0, n - 50, size=rng.integers(3, 12)):
            flags[start : start + rng.integers(5, 40), c] = 1.0
    values = np.column_stack([tele, flags])
    windows = [values[s : s + T] for s in range(0, n - T + 1, 4)]
    check = RelationCheck(RelationsConfig(), hop=4)
    hits = [h for b in range(0, len(windows), 64) for h in feed(check, "t1", windows[b : b + 64])]
    assert len(hits) > 2000
    assert all(h is None for h in hits)
    # The continuous channel is still judged: constant inside no window.
    fit = check._devices[("pumps", "t1")].fit
    assert fit is not None
    assert fit.inverse[0] > 0
    assert np.all(fit.inverse[1:] == 0)


def test_a_small_break_that_lasts_is_caught_by_its_average() -> None:
    """Flow 1.5 m3/h low (about 3 scales: never k in one window) for 20 windows: caught
    once a window's span of windows has shown it, by the sustained average, and not at all
    by single windows. Flow and current both follow the load linearly here, so either
    moving alone explains the residuals as well: either may be named."""
    for sustained, caught in ((RelationsConfig().sustained, True), (0.0, False)):
        check, pump = trained(RelationsConfig(sustained=sustained))
        hits = feed(check, "p1", [pump.window(0.8, (-1.5, 0, 0, 0)) for _ in range(20)])
        if caught:
            assert all(h is not None and h.feature in (0, 2) for h in hits[4:])
            assert all(h.z < RelationsConfig().k and h.exceedance < 1e-6 for h in hits if h)
        else:
            assert all(h is None for h in hits)


def test_the_sustained_average_draws_no_alarm_in_a_long_normal_run() -> None:
    check, pump = trained()
    rng = np.random.default_rng(7)
    normal = feed(check, "p1", [pump.window(x) for x in loads(rng, 2000)])
    assert sum(h is not None for h in normal) <= 1


def test_the_sustained_scale_needs_thirty_two_independent_averages() -> None:
    """Sixteen spans of learnt windows before the averages are worked out, and 32 of their
    correlation times before they are judged: with white residuals, 4-window averages
    decorrelate in ~3 windows, so 128 learnt windows (32 spans) are not enough; 256 are."""
    pump = Pump()
    rng = np.random.default_rng(1)
    values = [pump.window(x) for x in loads(rng, 256)]
    means = np.stack(values).mean(axis=1)
    noise = np.full(4, 0.01)
    few = fit_relations(means[:63], noise, 0.995, block=4)
    spans = fit_relations(means[:128], noise, 0.995, block=4)
    enough = fit_relations(means, noise, 0.995, block=4)
    assert few is not None
    assert spans is not None
    assert enough is not None
    assert not few.sustained.any()
    assert not spans.sustained.all()
    assert (enough.sustained[enough.inverse > 0] > 0).all()
    # A fit saved before the sustained average existed loads, and is not judged so.
    data = enough.to_data()
    del data["sustained"]
    assert not Relations.from_data(data, 4).sustained.any()


def test_a_residual_that_wanders_once_in_the_learnt_windows_is_not_judged_by_its_average() -> None:
    """Read every second, 13 minutes of a pump hold part of one swing of its winding
    temperature behind a load change (a lag of 15-30 minutes): the largest average of its
    residual seen so far says nothing of the next swing's, and judged against it every
    later swing alerted (docs/BENCHMARKS.md, "A lag longer than the learning"). The
    sustained average is judged only where the learnt windows hold 32 times the
    averages' correlation time (the lag at which its autocorrelation falls below 1/e)."""
    pump = Pump()
    rng = np.random.default_rng(1)
    values = [pump.window(x) for x in loads(rng, 256)]
    means = np.stack(values).mean(axis=1)
    noise = np.full(4, 0.01)
    ambient = fit_relations(means, noise, 0.995, block=4)
    swing = means.copy()
    swing[:, 3] += np.linspace(0.0, 3.0, len(swing))  # one slow wander, still going
    lagged = fit_relations(swing, noise, 0.995, block=4)
    assert ambient is not None
    assert lagged is not None
    assert ambient.sustained[3] > 0
    assert lagged.sustained[3] == 0
    assert (lagged.sustained[:3][lagged.inverse[:3] > 0] > 0).all()  # the others still are
    assert relations._correlation_time(np.zeros((10, 1)))[0] == 10  # constant: never falls


def test_a_wander_under_the_noise_is_timed_on_the_averages_the_sustained_check_reads() -> None:
    """A residual whose slow wander hides under window-to-window noise decorrelates at
    once, reading by reading (its autocorrelation below 1/e at lag 1), but the averages the
    sustained check judges -- over a window's span -- keep the wander; timed on the raw
    residual, such a feature was judged by the largest of a wander seen once (read every
    second, the fleet's temperatures: docs/BENCHMARKS.md, "The sustained average's
    wander")."""
    pump = Pump()
    rng = np.random.default_rng(1)
    means = np.stack([pump.window(x) for x in loads(rng, 256)]).mean(axis=1)
    noise = np.full(4, 0.01)
    wandering = means.copy()
    rows = np.arange(len(wandering))
    shocks = np.random.default_rng(2).normal(0.0, 0.5, len(wandering))
    wandering[:, 3] += 0.5 * np.sin(2 * np.pi * rows / 96) + shocks
    fit = fit_relations(wandering, noise, 0.995, block=4)
    assert fit is not None
    assert fit.sustained[3] == 0
    assert (fit.sustained[:3][fit.inverse[:3] > 0] > 0).all()  # the others still are


def test_ring_of_window_means_grows_into_the_ring_a_full_one_would_be() -> None:
    """A device's ring starts small and doubles (issue #23, memory): after every pass it
    holds the rows, in the places, that a ring allocated at full size holds."""
    config = RelationsConfig(history=100)
    check = RelationCheck(config, hop=4)
    rng = np.random.default_rng(3)
    grown = _Device.empty(100, 3)
    full = _Device(np.zeros((100, 3), dtype=np.float32), np.zeros(3), np.ones(3))
    assert len(grown.ring) < 100
    for _ in range(40):
        ready = [(rng.random(3), rng.random(3), rng.random(3)) for _ in range(rng.integers(1, 9))]
        check._remember(grown, ready)
        check._remember(full, ready)
        assert (grown.filled, grown.head) == (full.filled, full.head)
        np.testing.assert_array_equal(grown.ring[: grown.filled], full.ring[: full.filled])
        np.testing.assert_array_equal(grown.noise, full.noise)
    np.testing.assert_array_equal(grown.ring, full.ring)


def test_the_stacked_ridge_solves_give_the_weights_of_one_solve_each() -> None:
    """``_least_squares`` solves the systems of several fits (the full one and each
    held-out block's) in one stacked call (issue #23, speed): the weights are those of one
    ``np.linalg.solve`` per feature and fit, bit for bit."""
    rng = np.random.default_rng(5)
    for trial in range(300):
        used, fits = int(rng.integers(2, 10)), int(rng.integers(1, 6))
        grams, rows, expected = [], [], []
        for _ in range(fits):
            n = int(rng.integers(3, 600))
            z = rng.standard_normal((n, used))
            if trial % 3 == 0:  # two nearly collinear features: the ridge is what holds
                z[:, 1] = 2 * z[:, 0] + 1e-9 * rng.standard_normal(n)
            gram = z.T @ z
            one = np.zeros((used, used))
            eye = relations._RIDGE * n * np.eye(used - 1)
            for j in range(used):
                others = np.delete(np.arange(used), j)
                one[j, others] = np.linalg.solve(
                    gram[np.ix_(others, others)] + eye, gram[others, j]
                )
            grams.append(gram)
            rows.append(n)
            expected.append(one)
        got = relations._least_squares(np.stack(grams), np.array(rows))
        assert np.array_equal(got, np.stack(expected))


def test_fits_give_each_window_its_devices_current_fit() -> None:
    check, pump = trained()
    windows = as_windows("p1", [pump.window(0.7)]) + as_windows("p2", [pump.window(0.7)])
    p1, p2 = check.fits(MODEL, windows)
    assert p1 is check._devices[("pumps", "p1")].fit
    assert p1 is not None
    assert p2 is None  # a device not learnt yet
    # a model that leaves a feature to the constant check: the fit is stale until renewed
    assert check.fits(ConstantsDetector({3: 20.0}), windows) == [None, None]
    assert RelationCheck(RelationsConfig(enabled=False), 4).fits(MODEL, windows) == [None, None]


def test_a_hit_names_the_newest_reading_that_carries_its_residual() -> None:
    # Issue #21, an alert closes when its evidence does: a window's residual is the mean of
    # its readings', so a break that ended stays in the windows holding it for a window's
    # length; its own readings are the hit's evidence.
    check, pump = trained()
    ended = pump.window(0.8)
    ended[:5, 0] -= 30.0  # flow read 30 low for the window's oldest five readings
    throughout = pump.window(0.8, (-5.0, 0, 0, 0))
    first, whole = feed(check, "p1", [ended, throughout])
    assert first is not None
    assert (first.feature, first.age) == (0, T - 5)  # reading 4, the break's last
    assert whole is not None
    assert whole.age is not None
    assert whole.age <= 2  # to the newest


def test_a_device_is_judged_after_warmup_windows_but_fitted_after_64() -> None:
    """The residual scale is the 0.995 quantile of the learnt windows' residuals: from
    fewer than 200 it is their largest, and a pump that joined after training was judged
    on a third of its first day (docs/BENCHMARKS.md, "Relations learnt on 200 windows").
    Its fit serves the spike check and the joint-step rule from 64 windows on."""
    assert RelationsConfig().warmup == 200
    check = RelationCheck(RelationsConfig(), hop=4)
    pump = Pump(3)
    rng = np.random.default_rng(103)
    feed(check, "p1", [pump.window(x) for x in loads(rng, 100)])
    shifted = [pump.window(0.8, (-5.0, 0, 0, 0)) for _ in range(4)]
    windows = as_windows("p1", shifted, t0=100 * T)
    # 100 learnt: not judged yet (checked, not learnt), but fitted
    assert check.check(MODEL, windows, np.stack(shifted)) == [None] * 4
    assert all(fit is not None for fit in check.fits(MODEL, windows))
    feed(check, "p1", [pump.window(x) for x in loads(rng, 120)])
    hits = feed(check, "p1", [pump.window(0.8, (-5.0, 0, 0, 0)) for _ in range(4)])
    assert all(h is not None and h.feature == 0 for h in hits)


def test_a_shorter_warmup_fits_and_judges_as_soon() -> None:
    check = RelationCheck(RelationsConfig(warmup=32), hop=4)
    pump = Pump(4)
    rng = np.random.default_rng(104)
    feed(check, "p1", [pump.window(x) for x in loads(rng, 40)])
    hits = feed(check, "p1", [pump.window(0.8, (-5.0, 0, 0, 0)) for _ in range(4)])
    assert all(h is not None and h.feature == 0 for h in hits)


def test_departures_from_a_basis_made_once_are_the_same_to_the_bit() -> None:
    """The spike check makes a fit's departure basis once per device and fit (issue #23,
    speed): what it gives is what departures made afresh give."""
    pump = Pump(3)
    rng = np.random.default_rng(4)
    means = np.stack([pump.window(x).mean(axis=0) for x in loads(rng, 300)])
    fit = fit_relations(means, noise=np.array([0.1, 0.01, 0.05, 0.03]), quantile=0.995)
    assert fit is not None
    inverse = np.where(fit.inverse > 0, 1.0 / (0.1 + rng.random(4)), 0.0)
    named = fit.inverse > 0
    basis = fit.departure_basis(inverse, named)
    for _ in range(20):
        residuals = rng.standard_normal((10, 4))
        fresh, cached = (
            fit.departures(residuals, inverse, named),
            fit.departures(residuals, inverse, named, basis),
        )
        assert np.array_equal(fresh[0], cached[0])
        assert np.array_equal(fresh[1], cached[1])
    assert named.sum() >= 2  # the pump's load channels are judged


def test_clearing_nan_gives_what_nan_to_num_gives() -> None:
    """``_nan_to_zero`` is ``np.nan_to_num(x, nan=0.0)`` made cheap (issue #23, speed):
    NaN to 0, infinities to the largest finite floats, the rest as it was."""
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5e300, 5e-324])
    expected = np.nan_to_num(values, nan=0.0)
    got = relations._nan_to_zero(values)
    assert np.array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    assert np.isnan(values[0])  # the input is left alone
