"""Live reconfiguration: what a reload changes, and that the worker applies it."""

from __future__ import annotations

import pytest

from sentinel.config import AlertsConfig, ThresholdConfig
from sentinel.daemon.reload import plan_reload
from sentinel.judge.alerts import AlertTracker
from sentinel.judge.threshold import ThresholdBank
from tests.fakes import FakeDetector, Harness, delivery, make_config
from tests.judge.helpers import score, with_model


def test_live_keys_are_applied_and_the_rest_needs_a_restart() -> None:
    running = make_config()
    loaded = make_config(
        threshold={"warmup": 1000, "multiplier": 2.5},
        alerts={"open_after": 2, "close_after": 3},
        spikes={"k": 12.0},
        levels={"enabled": True},
        stuck={"factor": 4.0},
        logging={"level": "debug"},
        windows={"length": 8, "hop": 1, "max_gap": 100},
        mqtt={"host": "elsewhere"},
    )
    plan = plan_reload(running, loaded)
    assert plan.applied == {
        "threshold.multiplier": (1.5, 2.5),
        "alerts.open_after": (1, 2),
        "alerts.close_after": (2, 3),
        "spikes.k": (10.0, 12.0),
        "levels.enabled": (False, True),
        "stuck.factor": (3.0, 4.0),
        "logging.level": ("info", "debug"),
    }
    assert set(plan.needs_restart) == {"windows.length", "mqtt.host"}
    # The running values of restart-only keys are kept; the live ones are taken.
    assert plan.config.windows.length == 4
    assert plan.config.mqtt.host == "127.0.0.1"
    assert plan.config.threshold.multiplier == 2.5
    assert plan.config.alerts.close_after == 3
    assert plan.config.spikes.k == 12.0
    assert plan.config.levels.enabled
    assert plan.config.stuck.factor == 4.0


def test_a_new_stream_list_is_applied_by_restarting_the_components() -> None:
    running = make_config()
    streams = [{"name": "fan", "topic": "f/{device}", "features": ["x", "y"]}]
    plan = plan_reload(
        running, make_config(streams=streams, windows={"length": 8, "hop": 1, "max_gap": 100})
    )
    assert "streams" not in plan.needs_restart
    assert set(plan.needs_restart) == {"windows.length"}
    assert not plan.changed
    assert [s.name for s in plan.config.streams] == ["pump"]
    # What the components start again with: the new streams, the running restart-only keys.
    assert plan.restart_streams is not None
    assert [s.name for s in plan.restart_streams.streams] == ["fan"]
    assert plan.restart_streams.windows.length == 4
    assert plan_reload(running, make_config()).restart_streams is None


def test_unchanged_file_changes_nothing() -> None:
    plan = plan_reload(make_config(), make_config())
    assert not plan.changed
    assert not plan.needs_restart


def test_threshold_bank_keeps_what_devices_learned_across_a_reconfigure() -> None:
    config = ThresholdConfig(quantile=0.99, warmup=100, history=200, multiplier=1.5)
    bank = with_model(ThresholdBank(config), 99.0)
    for i in range(150):
        bank.judge(score(1.0 + (i % 10) / 100))
    before = bank.judge(score(0.5)).threshold
    assert before < 99.0, "past warm-up the device's own quantile is used"
    bank.reconfigure(config.model_copy(update={"multiplier": 3.0}))
    after = bank.judge(score(0.5)).threshold
    assert after == pytest.approx(before / 1.5 * 3.0, rel=0.02)
    bank.reconfigure(config.model_copy(update={"multiplier": 3.0, "history": 100}))
    state = next(iter(bank._devices.values()))
    assert len(state.recent) == 100
    assert state.normal_seen == 152
    # Switching to spot refits from the calibration scores on the next window.
    bank.reconfigure(config.model_copy(update={"method": "spot"}))
    assert not bank._devices


def test_alert_rules_change_the_window_span() -> None:
    tracker = AlertTracker(AlertsConfig(open_after=2), {"pump": ("x", "y")})
    tracker.reconfigure(AlertsConfig(open_after=2, open_within=5))
    assert tracker.config.window_span == 5


def test_pipeline_applies_a_reload_between_passes() -> None:
    """A spike of 2.0 is anomalous at multiplier 1.5 (threshold 1.5), not at 2.5."""
    h = Harness({"pump": FakeDetector()})
    h.pipeline.reconfigure(
        make_config(threshold={"warmup": 1000, "multiplier": 2.5}, alerts={"open_after": 1})
    )
    values = [0.1] * 8 + [2.0] + [0.1] * 8
    h.run([delivery("a", float(t), v) for t, v in enumerate(values)])
    assert h.pipeline.stats.scored > 0
    assert h.pipeline.stats.anomalous == 0, "the reloaded multiplier was not applied"
    h2 = Harness({"pump": FakeDetector()})
    h2.run([delivery("a", float(t), v) for t, v in enumerate(values)])
    assert h2.pipeline.stats.anomalous > 0, "without the reload the spike is anomalous"


def test_a_reload_keeps_each_devices_rebaselined_level() -> None:
    config = ThresholdConfig(quantile=0.99, warmup=100, history=200)
    bank = with_model(ThresholdBank(config), 99.0)
    for i in range(150):
        bank.judge(score(1.0 + (i % 10) / 100))
    state = next(iter(bank._devices.values()))
    state.scale = 4.0  # as after a re-baseline to a level four times higher
    assert state.watch is not None
    bank.reconfigure(config.model_copy(update={"quantile": 0.995, "warmup": 200}))
    state = next(iter(bank._devices.values()))
    assert state.scale == 4.0
    assert state.watch is not None
    # New drift parameters: the watch is rebuilt with them, the level is kept.
    bank.reconfigure(bank.config.model_copy(update={"drift_threshold": 40.0}))
    assert state.watch is None
    assert state.scale == 4.0
    bank.judge(score(1.0))
    assert state.watch is not None
