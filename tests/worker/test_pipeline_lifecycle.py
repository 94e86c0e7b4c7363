"""The pipeline's part in re-baselining, resolve, reasons and restarts (fake detector)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentinel.config import SentinelConfig
from sentinel.records import AlertStatus, WriteBatch
from sentinel.worker.pipeline import Pipeline
from tests.fakes import FakeDetector, delivery, make_config


def pipeline(config: SentinelConfig, snapshot: Path | None = None, **kw: Any) -> Pipeline:
    return Pipeline(
        config,
        sink=lambda b: None,
        request_training=lambda j: None,
        models={"pump": FakeDetector()},
        snapshot_path=snapshot,
        **kw,
    )


def feed(p: Pipeline, values: list[float], t0: float = 0.0, device: str = "a") -> list[WriteBatch]:
    return [p.process([delivery(device, t0 + i, x)]) for i, x in enumerate(values)]


def lifecycle_config(**alerts: Any) -> SentinelConfig:
    return make_config(
        # The fake's level change is x80: one re-baseline, not two steps of the default x10.
        threshold={
            "warmup": 200,
            "history": 400,
            "quantile": 0.99,
            "rebaseline_after": 60,
            "rebaseline_max_factor": 100,
        },
        alerts={"open_after": 1, "close_after": 2, **alerts},
    )


def test_alerts_carry_the_threshold_state_and_the_config_hash() -> None:
    config = lifecycle_config()
    p = pipeline(config)
    batches = feed(p, [0.1] * 10 + [9.0])
    (alert,) = [a for b in batches for a in b.alerts]
    assert alert.reason is not None
    assert alert.reason.config_hash == p.config_hash
    assert alert.reason.threshold.method == "quantile"
    assert alert.reason.threshold.warm is False  # still on the model's calibration threshold
    assert alert.reason.threshold.value == 1.5  # the fake model's fallback: 1.0 x 1.5
    assert alert.severity.value in ("info", "warning", "critical")


def test_a_lasting_level_change_rebaselines_and_is_audited_in_the_batch() -> None:
    p = pipeline(lifecycle_config())
    batches = feed(p, [0.1 + 0.01 * (i % 5) for i in range(300)])
    batches += feed(p, [8.0 + 0.1 * (i % 5) for i in range(200)], t0=300)
    audit = [e for b in batches for e in b.audit]
    assert [e.kind for e in audit] == ["threshold_rebaselined"]
    alerts = [a for b in batches for a in b.alerts]
    assert alerts[-1].status is AlertStatus.CLOSED  # no endless alert
    ended_at = alerts[-1].ended_at
    assert ended_at is not None
    assert audit[0].at <= ended_at + 10


def test_a_resolved_alert_closes_in_the_pipeline_and_cools_down() -> None:
    p = pipeline(lifecycle_config(cooldown=100))
    (opened,) = [a for b in feed(p, [0.1] * 5 + [9.0]) for a in b.alerts]
    p.alerts_resolved([opened.uid])
    # The next pass applies it: further anomalies within the cooldown raise nothing.
    assert [a for b in feed(p, [9.0] * 5, t0=10) for a in b.alerts] == []
    later = [a for b in feed(p, [0.1] * 5 + [9.0], t0=200) for a in b.alerts]
    assert later
    assert later[0].uid != opened.uid


def test_restart_restores_thresholds_drift_state_and_open_alerts(tmp_path: Path) -> None:
    snapshot = tmp_path / "thresholds.json"
    config = lifecycle_config()
    first = pipeline(config, snapshot)
    first.start()
    for i in range(250):
        assert first.offer(delivery("a", float(i), 0.1 + 0.01 * (i % 5)))
    for i in range(250, 262):  # a level change begins: found, not yet re-baselined
        assert first.offer(delivery("a", float(i), 8.0))
    first.stop()
    saved = json.loads(snapshot.read_text())["streams"]["pump"]["devices"]["a"]
    assert saved["watch"]["since"] is not None
    current = first._alerts._devices[("pump", "a")].open
    assert current is not None  # what the store's open_alerts() would hand the next start
    open_alerts = [current.alert]

    second = pipeline(config, snapshot, open_alerts=open_alerts)
    assert second._thresholds.snapshot("pump")["a"] == saved
    batches = feed(second, [8.0] * 80, t0=262.0)
    changes = [a for b in batches for a in b.alerts]
    assert {a.uid for a in changes} == {open_alerts[0].uid}  # continued, not duplicated
    audit = [e for b in batches for e in b.audit]
    assert [e.kind for e in audit] == ["threshold_rebaselined"]
    # The episode began before the restart, so the re-baseline comes rebaseline_after
    # (60 s) after that, not 60 s after the restart.
    assert audit[0].detail["change_detected_at"] == saved["watch"]["since"]
    assert changes[-1].status is AlertStatus.CLOSED


def test_a_reopening_is_logged_and_counted_as_such() -> None:
    from structlog.testing import capture_logs

    p = pipeline(lifecycle_config(cooldown=60))
    with capture_logs() as logs:
        # Opens; closes after 2 normal windows (windows are 4 readings long); turns
        # anomalous again within the cooldown; closes again.
        batches = feed(p, [0.1] * 10 + [9.0, 9.0] + [0.1] * 6 + [9.0] + [0.1] * 6)
    alerts = [a for b in batches for a in b.alerts]
    assert len({a.uid for a in alerts}) == 1  # one alert, reopened
    events = [
        e["event"] for e in logs if e["event"].startswith("alert_") and e["log_level"] == "info"
    ]
    assert events == ["alert_opened", "alert_closed", "alert_reopened", "alert_closed"]
    assert (p.stats.alerts_opened, p.stats.alerts_reopened, p.stats.alerts_closed) == (1, 1, 2)
    # Opening and reopening lines say which check fired; here the score (a 9.0 reading far
    # above the model's normal errors) did.
    opened = [e for e in logs if e["event"] in ("alert_opened", "alert_reopened")]
    assert [e["checks"].split("+")[0] for e in opened] == ["score", "score"]
