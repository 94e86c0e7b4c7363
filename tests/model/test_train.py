from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest
import torch

from sentinel.config import ModelConfig, SentinelConfig
from sentinel.errors import DataError, ModelError
from sentinel.model import (
    LstmAeDetector,
    TrainOptions,
    constant_features,
    make_windows,
    stepped_features,
    train_detector,
    training_options,
)
from sentinel.model.base import ProgressFn
from sentinel.model.train import (
    MIN_EPOCH_WINDOWS,
    MIN_WINDOWS,
    PATIENCE,
    _epoch_order,
    _window_starts,
    commanding_features,
    counter_features,
    pulse_features,
)

FEATURES = ("flow", "pressure", "phase", "power")
WINDOW = 16
CPU = torch.device("cpu")


def machine(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Four correlated channels of one rotating machine, with a little sensor noise."""
    base = np.sin(2 * np.pi * t / 25)
    clean = np.column_stack(
        [10 + base, 3 + 2 * base, np.cos(2 * np.pi * t / 25), 100 + 20 * base**2]
    )
    noise = rng.normal(0, 0.05, clean.shape) * [1, 2, 1, 20]
    return (clean + noise).astype(np.float32)


def config(**changes: object) -> ModelConfig:
    base: dict[str, object] = {
        "hidden_size": 16,
        "latent_size": 4,
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 5e-3,
    }
    base.update(changes)
    return ModelConfig.model_validate(base)


def train(
    segments: list[np.ndarray],
    cfg: ModelConfig,
    relative: tuple[str, ...] = (),
    *,
    first_ts: float | None = None,
    last_ts: float | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> LstmAeDetector:
    return train_detector(
        segments,
        TrainOptions("pump", FEATURES, WINDOW, cfg, relative),
        device=CPU,
        first_ts=first_ts,
        last_ts=last_ts,
        progress=progress,
        stop=stop,
    )


@pytest.fixture(scope="module")
def trained() -> LstmAeDetector:
    rng = np.random.default_rng(1)
    # Two devices' worth of data, each its own segment.
    segments = [machine(np.arange(400.0), rng), machine(np.arange(7.0, 307.0), rng)]
    return train(segments, config(), first_ts=1000.0, last_ts=1400.0)


# -- windows -------------------------------------------------------------------------------


def test_make_windows_shapes() -> None:
    data = np.arange(20.0).reshape(10, 2)
    w = make_windows(data, 4, 1)
    assert w.shape == (7, 4, 2)
    np.testing.assert_array_equal(w[0], data[0:4])
    np.testing.assert_array_equal(w[-1], data[6:10])
    w3 = make_windows(data, 4, 3)
    assert w3.shape == (3, 4, 2)
    np.testing.assert_array_equal(w3[2], data[6:10])
    assert make_windows(data, 11, 1).shape == (0, 11, 2)
    assert make_windows(data, 10, 5).shape == (1, 10, 2)


def test_make_windows_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        make_windows(np.zeros(5), 2, 1)
    with pytest.raises(DataError):
        make_windows(np.zeros((5, 1)), 2, 0)


def test_training_windows_never_straddle_segments() -> None:
    lengths = [10, 3, 7]
    starts = _window_starts(lengths, window=4, stride=2)
    # Segment 0 rows 0..9, segment 1 rows 10..12 (too short), segment 2 rows 13..19.
    np.testing.assert_array_equal(starts, [0, 2, 4, 6, 13, 15])
    bounds = np.cumsum([0, *lengths])
    for s in starts:
        seg = np.searchsorted(bounds, s, side="right") - 1
        assert s + 4 <= bounds[seg + 1]
    # Same windows as make_windows applied per segment.
    data = np.arange(20.0).reshape(20, 1)
    per_segment = np.concatenate(
        [make_windows(data[a:b], 4, 2) for a, b in itertools.pairwise(bounds)]
    )
    np.testing.assert_array_equal(data[starts[:, None] + np.arange(4)], per_segment)


# -- detection -----------------------------------------------------------------------------


def test_trained_model_separates_anomalies_from_normal_windows(trained: LstmAeDetector) -> None:
    rng = np.random.default_rng(99)
    fresh = machine(np.arange(2000.0, 2400.0), rng)  # unseen normal data
    normal = np.ascontiguousarray(make_windows(fresh, WINDOW, 2))
    threshold = trained.meta.calibration.quantiles["0.999"]

    scores, _ = trained.score(normal)
    # The 0.999 quantile of ~130 held-back windows is about their largest; fresh windows
    # from later in the same process cross it more often than 0.1 % (3.6 % with 18 batches
    # an epoch, 8.3 % since an epoch draws MIN_EPOCH_WINDOWS and the model fits closer). The
    # device's own threshold, learnt on live windows, is what judges them in the daemon.
    assert np.mean(scores > threshold) < 0.10

    spike = normal.copy()
    spike[:, 8, 0] += 3.0  # one flow reading jumps by ~4 sigma
    level = normal.copy()
    level[:, 8:, 1] += 2.0  # pressure steps up half way through
    broken = normal.copy()
    broken[:, :, 1] = 6.0 - broken[:, :, 1]  # pressure moves against flow; ranges unchanged
    for name, windows, feature in [("spike", spike, 0), ("level", level, 1), ("broken", broken, 1)]:
        bad, feature_errors = trained.score(windows)
        assert np.all(bad > 2 * threshold), name
        # The feature that was tampered with carries the most error in most windows.
        assert np.mean(feature_errors.argmax(axis=1) == feature) > 0.6, name


def test_meta_describes_the_training(trained: LstmAeDetector) -> None:
    meta = trained.meta
    assert meta.stream == "pump"
    assert meta.features == FEATURES
    assert meta.window == WINDOW
    assert (meta.hidden_size, meta.latent_size, meta.num_layers) == (16, 4, 1)
    assert meta.version == trained.version
    assert len(meta.version) == len("20250101T000000Z-abcdef")
    assert meta.created.endswith("+00:00")
    t = meta.training
    assert t["n_readings"] == 700
    assert t["n_windows"] == (400 - WINDOW + 1) + (300 - WINDOW + 1)
    assert (t["first_ts"], t["last_ts"]) == (1000.0, 1400.0)
    assert t["seed"] == 0
    assert set(t) >= {"epochs_run", "train_loss", "val_loss", "seconds"}
    q = meta.calibration.quantiles
    assert list(q) == ["0.5", "0.9", "0.99", "0.995", "0.999"]
    assert q["0.5"] <= q["0.9"] <= q["0.99"] <= q["0.995"] <= q["0.999"] <= meta.calibration.max
    assert len(meta.calibration.feature_mean_errors) == len(FEATURES)
    np.testing.assert_allclose(meta.scaler.mean[0], 10.0, atol=0.1)


# -- training control ----------------------------------------------------------------------


def small_data() -> list[np.ndarray]:
    return [machine(np.arange(200.0), np.random.default_rng(5))]


def test_same_seed_gives_identical_weights_and_scores() -> None:
    cfg = config(epochs=3)
    a = train(small_data(), cfg)
    b = train(small_data(), cfg)
    for key, value in a.module.state_dict().items():
        torch.testing.assert_close(value, b.module.state_dict()[key], rtol=0, atol=0)
    windows = np.ascontiguousarray(make_windows(small_data()[0], WINDOW, 8))
    np.testing.assert_array_equal(a.score(windows)[0], b.score(windows)[0])
    assert a.meta.calibration == b.meta.calibration
    c = train(small_data(), config(epochs=3, seed=1))
    assert not np.array_equal(a.score(windows)[0], c.score(windows)[0])


def test_progress_is_reported_every_epoch_and_best_weights_are_kept() -> None:
    calls: list[tuple[int, int, float]] = []
    # A learning rate this small never improves validation loss enough, so early
    # stopping ends training after the first epoch plus PATIENCE stale ones.
    det = train(
        small_data(), config(epochs=50, learning_rate=1e-9), progress=lambda *a: calls.append(a)
    )
    assert [c[0] for c in calls] == list(range(1, PATIENCE + 2))
    assert all(c[1] == 50 for c in calls)
    assert det.meta.training["epochs_run"] == PATIENCE + 1
    # No epoch improved on the first by the required margin, so its weights were kept.
    assert det.meta.training["val_loss"] == calls[0][2]


def test_an_epoch_of_a_small_training_draws_at_least_the_minimum_of_windows() -> None:
    rng = np.random.default_rng(0)
    starts = np.arange(300, dtype=np.int64)
    order = _epoch_order(starts, MIN_EPOCH_WINDOWS, rng)
    assert len(order) == MIN_EPOCH_WINDOWS
    counts = np.bincount(order, minlength=300)
    assert counts.min() == MIN_EPOCH_WINDOWS // 300
    assert counts.max() == MIN_EPOCH_WINDOWS // 300 + 1
    # a training with enough windows: one shuffle, each window once
    many = np.arange(2_000, dtype=np.int64)
    order = _epoch_order(many, 2_000, rng)
    assert sorted(order.tolist()) == list(range(2_000))


def test_a_small_training_takes_as_many_steps_an_epoch_as_a_larger_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SKAB trains on 400 readings: 5 batches an epoch, and 30 epochs stopped the
    forecaster while its held-back loss still fell (docs/BENCHMARKS.md, "Small
    trainings")."""
    steps: list[int] = []
    clip = torch.nn.utils.clip_grad_norm_

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        steps.append(1)
        return torch.as_tensor(clip(*args, **kwargs))

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    epochs: list[int] = []
    train(small_data(), config(epochs=2), progress=lambda e, *_: epochs.append(e))
    assert epochs == [1, 2]
    assert len(steps) == 2 * -(-MIN_EPOCH_WINDOWS // 32)  # batch_size 32


def test_stop_event_cancels_training() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def progress(epoch: int, epochs: int, val_loss: float) -> None:
        calls.append(epoch)
        if epoch == 2:
            stop.set()

    with pytest.raises(ModelError, match="training cancelled"):
        train(small_data(), config(epochs=10), progress=progress, stop=stop)
    assert calls == [1, 2]


def test_training_leaves_torch_thread_count_alone() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(small_data(), config(epochs=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_too_little_data_is_a_data_error() -> None:
    rows = WINDOW + MIN_WINDOWS - 2  # one window short
    segment = machine(np.arange(float(rows)), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"7 windows .* from 27 readings in 2 segments"):
        train([segment, segment[:5]], config(epochs=1))
    with pytest.raises(DataError, match="no segments"):
        train([], config(epochs=1))


def test_bad_segments_are_data_errors() -> None:
    good = machine(np.arange(100.0), np.random.default_rng(0))
    with pytest.raises(DataError, match="shape"):
        train([good[:, :3]], config(epochs=1))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        train([good, bad], config(epochs=1))


def test_validation_windows_share_no_rows_with_training_windows() -> None:
    from sentinel.model.train import _split_starts

    lengths, window = [200, 50, 10], 16
    train, val = _split_starts(lengths, window, stride=1, fraction=0.2)
    assert len(train) > 0
    assert len(val) > 0
    train_rows = {int(s) + k for s in train for k in range(window)}
    val_rows = {int(s) + k for s in val for k in range(window)}
    assert not train_rows & val_rows
    # The first segment's last 40 rows are held back. The second's last 10 rows cannot hold
    # a window, so it trains whole; the 10-row segment gives no window at all.
    assert (int(min(val)), int(max(val))) == (160, 184)
    assert int(max(train)) == 200 + 50 - window


def test_a_short_training_holds_back_at_least_two_and_a_half_windows() -> None:
    """An hourly white noise trained on 240 readings held back 48 (17 windows of 32 over the
    same few dozen readings): its live scores ran at 2.4 times their held-back median. A
    training too short for validation_fraction to hold back MIN_HELD_BACK_WINDOWS windows'
    worth of rows holds back that many, at most half; longer ones are unchanged."""
    from sentinel.model.train import MIN_HELD_BACK_WINDOWS, _split_starts

    window = 32
    least = int(MIN_HELD_BACK_WINDOWS * window)
    for rows, held in [(240, least), (400, 80), (2_000, 400), (120, 60)]:
        _, val = _split_starts([rows], window, stride=1, fraction=0.2)
        assert int(min(val)) == rows - held, rows
    assert least == 80  # what SKAB's 400 training readings hold back at 0.2


# -- relative features ----------------------------------------------------------------------


def warming(t: np.ndarray, rng: np.random.Generator, drift: float) -> np.ndarray:
    """The machine plus a slow temperature channel: warm-up drift and a little noise."""
    temp = 40 + drift * t / 100 + rng.normal(0, 0.02, len(t))
    return np.column_stack([machine(t, rng), temp]).astype(np.float32)


def train_warming(
    relative: tuple[str, ...], absolute: tuple[str, ...] = (), **changes: object
) -> LstmAeDetector:
    rng = np.random.default_rng(3)
    return train_detector(
        [warming(np.arange(500.0), rng, drift=0.5)],
        TrainOptions(
            "pump", (*FEATURES, "temp"), WINDOW, config(**changes), relative, absolute=absolute
        ),
        device=CPU,
    )


def test_relative_feature_ignores_drift_but_still_sees_a_step() -> None:
    absolute, relative = train_warming((), absolute=("temp",)), train_warming(("temp",))
    assert absolute.meta.relative_features == ()
    assert relative.meta.relative_features == ("temp",)
    rng = np.random.default_rng(4)
    # Later in the day: the channel has warmed 10 degrees past anything seen in training.
    later = warming(np.arange(3000.0, 3400.0), rng, drift=0.5)
    later[:, 4] += 10.0
    windows = make_windows(later, WINDOW, WINDOW)
    drifted_abs, _ = absolute.score(windows)
    drifted_rel, _ = relative.score(windows)
    assert np.median(drifted_abs) > 100  # judged by level: far outside training
    assert np.median(drifted_rel) < 3  # judged by changes: an ordinary window
    # A step of 1 degree inside a window is still an anomaly on the relative channel.
    stepped = windows.copy()
    stepped[:, WINDOW // 2 :, 4] += 1.0
    step_scores, step_errors = relative.score(stepped)
    assert np.median(step_scores) > 10 * np.median(drifted_rel)
    assert np.all(step_errors.argmax(axis=1) == 4)


def test_a_drifting_level_in_training_is_judged_relative_without_being_declared() -> None:
    """Issue #21: the warming channel is found from the training rows alone; the machine's
    stationary channels keep their level, so an offset on one of them still scores high,
    while the warmed channel, 10 degrees past training, scores as an ordinary window."""
    auto = train_warming(())
    assert auto.meta.relative_features == ("temp",)
    assert auto.meta.levels is not None
    assert auto.meta.levels.sd[-1] == 0.0  # no level check on it either
    later = warming(np.arange(3000.0, 3400.0), np.random.default_rng(4), drift=0.5)
    later[:, 4] += 10.0
    windows = make_windows(later, WINDOW, WINDOW)
    drifted, _ = auto.score(windows)
    assert np.median(drifted) < 3
    offset = windows.copy()
    offset[:, :, 0] += 1.5  # the flow 1.5 units (30 noise sigmas) above anything in training
    scores, errors = auto.score(offset)
    assert np.median(scores) > 10 * np.median(drifted)
    assert np.all(errors.argmax(axis=1) == 0)


def test_automatic_relative_levels_can_be_switched_off() -> None:
    off = train_warming((), drift_ratio=0.0, slow_ratio=0.0, epochs=1)
    assert off.meta.relative_features == ()


def test_the_optional_slowness_test_alone_finds_the_warming_channel() -> None:
    slow = train_warming((), drift_ratio=0.0, slow_ratio=2.0, epochs=1)
    assert slow.meta.relative_features == ("temp",)


def test_training_options_carry_each_explicit_level() -> None:
    cfg = SentinelConfig.model_validate(
        {
            "streams": [
                {
                    "name": "pump",
                    "topic": "p/{device}",
                    "features": [
                        "flow",
                        {"name": "temp", "level": "relative"},
                        {"name": "pressure", "level": "absolute"},
                    ],
                }
            ]
        }
    )
    options = training_options(cfg, "pump")
    assert options.relative == ("temp",)
    assert options.absolute == ("pressure",)


def rig(n: int, rng: np.random.Generator, flow: float) -> np.ndarray:
    """A pump rig whose flow meter reads whole units (SKAB's flow is quantised like this)."""
    t = np.arange(n)
    return np.column_stack(
        [
            np.round(flow + 0.45 * rng.standard_normal(n)),
            1 + 0.1 * rng.standard_normal(n),
            0.3 * np.sin(t / 5) + 0.05 * rng.standard_normal(n),
        ]
    ).astype(np.float32)


def test_levels_find_a_one_unit_shift_of_a_quantised_channel_the_model_follows() -> None:
    cfg = config(epochs=15, score_steps=4)
    model = train_detector(
        [rig(600, np.random.default_rng(2), flow=31.6)],
        TrainOptions("rig", ("flow", "pressure", "vibration"), WINDOW, cfg),
        device=CPU,
    )
    levels = model.meta.levels
    assert levels is not None
    assert all(sd > 0 for sd in levels.sd)
    threshold = 2 * model.meta.calibration.quantiles["0.995"]
    normal = make_windows(rig(400, np.random.default_rng(5), flow=31.6), WINDOW, 1)
    # Half a valve: the flow reads mostly 31 instead of mostly 32, every reading a value
    # training saw plenty of.
    shifted = make_windows(rig(400, np.random.default_rng(5), flow=30.6), WINDOW, 1)
    normal_z, shifted_z = model.levels(normal), model.levels(shifted)
    assert normal_z is not None
    assert shifted_z is not None
    assert normal_z.max() < 4
    assert np.mean(model.score(shifted)[0] > threshold) < 0.5  # the model mostly follows it
    assert np.mean(shifted_z[:, 0] > 6) > 0.8  # its level does not
    assert np.all(shifted_z[:, 1:] < 4)  # and the other channels are left alone


def test_relative_features_have_no_level() -> None:
    relative = train_warming(("temp",))
    assert relative.meta.levels is not None
    assert relative.meta.levels.sd[-1] == 0.0
    assert relative.meta.levels.sd[0] > 0.0


def test_relative_feature_must_be_one_of_the_features() -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(DataError, match="not among the features"):
        train([machine(np.arange(300.0), rng)], config(epochs=1), relative=("nonexistent",))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_gives_a_model_that_scores_like_on_cpu() -> None:
    rng = np.random.default_rng(6)
    segments = [warming(np.arange(500.0), rng, drift=0.5)]
    cuda = torch.device("cuda")
    detector = train_detector(
        segments,
        TrainOptions("pump", (*FEATURES, "temp"), WINDOW, config(), ("temp",)),
        device=cuda,
    )
    assert next(detector.module.parameters()).device.type == "cuda"
    assert float(detector.meta.training["val_loss"]) < 1.0  # it learned the machine
    on_cpu = LstmAeDetector(detector.meta, detector.module, CPU)  # moves the weights over
    windows = make_windows(warming(np.arange(600.0, 900.0), rng, drift=0.5), WINDOW, 4)
    got, _ = on_cpu.score(windows)
    back = LstmAeDetector(detector.meta, on_cpu.module, cuda)
    want, _ = back.score(windows)
    # cuDNN may use TF32 inside the LSTM, hence the loose tolerance.
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-5)


# -- score_steps ----------------------------------------------------------------------------


def test_scoring_the_newest_readings_ends_the_verdict_with_the_fault() -> None:
    """A window judged by its newest 4 readings stops alarming once a fault has left those
    4 readings; judged as a whole it keeps alarming while any faulty reading is in it."""
    rng = np.random.default_rng(6)
    segments = [machine(np.arange(600.0), rng)]
    whole = train(segments, config())
    newest = train(segments, config(score_steps=4))
    assert (whole.meta.score_steps, newest.meta.score_steps) == (0, 4)
    run = machine(np.arange(1000.0, 1200.0), rng)
    run[100:110, 0] += 3.0  # 10 readings of flow stuck 3 units high
    wins = make_windows(run, WINDOW, 1)  # window i ends at reading i + WINDOW - 1
    ends = np.arange(len(wins)) + WINDOW - 1

    def trailing(detector: LstmAeDetector) -> int:
        scores, _ = detector.score(wins)
        alarmed = scores > detector.meta.calibration.max
        assert alarmed[(ends >= 100) & (ends < 110)].any()  # both see the fault
        # Alarmed windows that end 4 or more readings after the fault's last one (109)
        # while the fault is still inside the window.
        return int(alarmed[(ends >= 113) & (ends <= 109 + WINDOW - 1)].sum())

    # The whole-window verdict trails the fault by most of a window (12 of 12 here); the
    # newest-readings one by a few readings (4), while the encoder still carries it.
    assert trailing(whole) >= 10
    assert trailing(newest) <= trailing(whole) // 2


def test_score_steps_beyond_the_window_is_refused() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(DataError, match="score_steps 17 exceeds the window of 16"):
        train([machine(np.arange(300.0), rng)], config(score_steps=WINDOW + 1))


def test_constant_features_are_those_flat_beside_their_own_magnitude() -> None:
    rng = np.random.default_rng(0)
    n = 500
    data = np.column_stack(
        [
            np.full(n, 7.0),  # stuck
            1000.0 + rng.normal(0, 1e-5, n),  # float noise on a large value
            rng.normal(0, 1e-3, n),  # small, but a signal around zero
            rng.normal(50, 1, n),
        ]
    )
    found = constant_features([data[:200], data[200:]], ("stuck", "big", "small", "normal"))
    assert list(found) == ["stuck", "big"]
    assert found["stuck"] == 7.0
    assert abs(found["big"] - 1000.0) < 1e-3


def test_stepped_features_hold_their_value_longer_than_a_window_between_changes() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=600)
    setpoint = np.repeat([40.0, 45.0, 40.0, 50.0], 150)
    counts = rng.poisson(3.0, 600).astype(float)  # changes most readings: not stepped
    flag = np.zeros(600)
    rows = np.column_stack([noisy, setpoint, counts, flag])
    names = ("noisy", "setpoint", "counts", "flag")
    # flag is constant: the constant check's, not a stepped feature
    assert stepped_features([rows], names, 32, ("flag",)) == ("setpoint",)
    # a step between two segments is no step: each segment alone is flat
    halves = [rows[:150], rows[150:300]]
    assert stepped_features(halves, names, 32, ("flag",)) == ()
    # nothing else would be left in the score: the stepped channel stays in it
    assert stepped_features([rows[:, [1, 3]]], ("setpoint", "flag"), 32, ("flag",)) == ()


def test_when_every_channel_is_stepped_the_pulses_leave_the_score() -> None:
    """Spacecraft-like telemetry: a noise-free channel held at levels, moved by commands
    sent as one-reading pulses. Every channel is stepped; the commands leave the score
    and the telemetry stays (issue #21)."""
    telemetry = np.repeat([-1.0, 0.3, 0.9, 0.3, -1.0, 0.9], 100)
    commands = np.zeros((600, 3))
    for at in range(100, 600, 100):
        commands[at, at // 100 % 3] = 1.0
    rows = np.column_stack([telemetry, commands])
    names = ("telemetry", "cmd_a", "cmd_b", "cmd_c")
    assert stepped_features([rows], names, 32) == ("cmd_a", "cmd_b", "cmd_c")
    # split in two segments, each pulse is still a pulse
    assert stepped_features([rows[:300], rows[300:]], names, 32) == ("cmd_a", "cmd_b", "cmd_c")
    # all pulses, or none: all stay in the score, as before
    assert stepped_features([commands], names[1:], 32) == ()
    held = commands.copy()
    for at in range(100, 600, 100):
        held[at : at + 10, at // 100 % 3] = 1.0  # held 10 readings: a mode, not a pulse
    assert stepped_features([np.column_stack([telemetry, held])], names, 32) == ()


def test_commanding_features_are_the_inputs_whose_changes_came_with_a_step() -> None:
    """A command whose channel moves at the command's reading is one; a command that moves
    nothing, or a channel that only drifts, is not (issue #21, commanded steps)."""
    rng = np.random.default_rng(3)
    n = 600
    telemetry = np.repeat([-1.0, 0.3, 0.9, 0.3, -1.0, 0.9], 100)
    moving = np.zeros(n)  # pulses at every telemetry step
    idle = np.zeros(n)  # pulses that move nothing
    for at in range(100, n, 100):
        moving[at] = 1.0
        idle[at - 50] = 1.0
    noisy = rng.normal(0.0, 1.0, n)  # a scored channel whose changes are all noise
    rows = np.column_stack([telemetry, moving, idle, noisy])
    names = ("telemetry", "moving", "idle", "noisy")
    stepped = ("moving", "idle")
    assert commanding_features([rows], names, stepped) == ("moving",)
    # the same pulses beside noise alone: nothing steps with them
    assert commanding_features([rows[:, 1:]], names[1:], stepped) == ()
    assert commanding_features([rows], names, ()) == ()


def test_counter_features_are_the_stepped_inputs_that_only_moved_one_way() -> None:
    """A disk's used space ticking up, or a tally counting down, is a counter; a set point
    moved both ways, or moved the same way fewer than ``COUNTER_CHANGES`` times, is not;
    changes are counted within segments (issue #21: a counter's tick is no input a channel
    responds to)."""
    n = 600
    disk = 50.0 + 0.1 * np.floor(np.arange(n) / 100)  # five ticks up
    tally = 9.0 - np.floor(np.arange(n) / 100)  # five ticks down
    setpoint = np.repeat([50.0, 45.0, 55.0, 50.0, 40.0, 45.0], 100)
    raised = np.repeat([40.0, 45.0, 50.0, 55.0, 55.0, 55.0], 100)  # up three times
    rows = np.column_stack([disk, tally, setpoint, raised])
    names = ("disk", "tally", "setpoint", "raised")
    assert counter_features([rows], names, names) == ("disk", "tally")
    assert counter_features([rows], names, ("setpoint", "raised")) == ()
    assert counter_features([rows], names, ()) == ()
    # in segments, the ticks within them count: five in two segments still make a counter
    halves = [rows[:250], rows[250:]]
    assert counter_features(halves, names, names) == ("disk", "tally")
    # the ticks at 200 and 400 fall between segments (a gap is no change): three are left
    thirds = [rows[i : i + 200] for i in range(0, n, 200)]
    assert counter_features(thirds, names, names) == ()


def test_pulse_features_are_the_pulse_trains_with_their_rest_and_values() -> None:
    """One-hot commands (0 but for a one-reading 1), a trigger with two-reading pulses to
    two values; not a channel held at levels, a constant one, nor a counter's ticks to
    more values than a command channel has (issue #21, commands never seen in training)."""
    n = 1_000
    rng = np.random.default_rng(0)
    command = np.zeros(n)
    command[50::97] = 1.0
    trigger = np.full(n, 5.0)
    for k, at in enumerate(range(30, n - 2, 80)):
        trigger[at : at + 2] = (7.0, -2.0)[k % 2]
    levels = np.repeat([0.0, 1.0, 0.0, 2.0], n // 4)  # held: a mode, not a pulse
    ticks = np.zeros(n)
    ticks[10::40] = np.arange(1, len(ticks[10::40]) + 1)  # 25 values
    noise = rng.normal(0.0, 1.0, n)
    rows = np.column_stack([command, trigger, levels, ticks, noise, np.zeros(n)])
    names = ("command", "trigger", "levels", "ticks", "noise", "off")
    assert pulse_features([rows], names, ("off",)) == {
        "command": (0.0, 1.0),
        "trigger": (5.0, -2.0, 7.0),
    }
    # segments are read one by one: a pulse cut by a gap is still a pulse
    assert pulse_features([rows[:500], rows[500:]], names, ("off",))["command"] == (0.0, 1.0)
    assert pulse_features([], names) == {}
