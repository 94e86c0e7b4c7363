"""Which alert changes are published, and how an alert becomes a payload (no I/O)."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from typing import Any

import pytest
from pydantic import ValidationError

from sentinel.config import PublishConfig
from sentinel.records import Alert, AlertStatus, FeatureContribution
from sentinel.store.outbox import OutboxPolicy, _Last, alert_payload, decide

T0 = 1_700_000_000.0


def alert(**changes: Any) -> Alert:
    base = Alert(
        uid="a-1",
        stream="pump",
        device="p1",
        status=AlertStatus.OPEN,
        started_at=T0,
        updated_at=T0,
        ended_at=None,
        peak_score=2.0,
        threshold=1.0,
        top_features=(FeatureContribution("current", 1.0),),
        model_version="v1",
        windows=2,
    )
    return dataclasses.replace(base, **changes)


def last(event: str, a: Alert, seq: int = 1) -> _Last:
    return _Last(seq=seq, event=event, payload=alert_payload(a))


POLICY = OutboxPolicy(peak_factor=1.5, interval=60.0)


def test_first_change_is_new_and_close_is_end() -> None:
    assert decide(None, alert(), POLICY) == ("new", "opened")
    closed = alert(status=AlertStatus.CLOSED, ended_at=T0)
    assert decide(None, closed, POLICY) == ("end", "closed")
    assert decide(last("new", alert()), closed, POLICY) == ("end", "closed")
    assert decide(last("end", closed), closed, POLICY) is None, "an end is said once"
    # Within alerts.cooldown the same alert reopens: consumers see it start again.
    assert decide(last("end", closed), alert(), POLICY) == ("new", "reopened")


@pytest.mark.parametrize(
    ("peak", "updated", "expected"),
    [
        (2.9, T0 + 59, None),  # neither grew enough nor long enough
        (3.0, T0 + 1, ("update", "peak")),  # exactly 1.5x
        (2.0, T0 + 60, ("update", "interval")),
        (1.0, T0 + 30, None),
    ],
)
def test_updates_only_on_meaningful_change(
    peak: float, updated: float, expected: tuple[str, str] | None
) -> None:
    previous = last("new", alert())
    assert decide(previous, alert(peak_score=peak, updated_at=updated), POLICY) == expected


def test_interval_zero_never_publishes_for_time() -> None:
    policy = OutboxPolicy(peak_factor=2.0, interval=0.0)
    assert decide(last("new", alert()), alert(updated_at=T0 + 86_400), policy) is None


def test_policy_bounds() -> None:
    with pytest.raises(ValueError, match="peak_factor"):
        OutboxPolicy(peak_factor=0.9)
    with pytest.raises(ValueError, match="interval"):
        OutboxPolicy(interval=-1)


class Severity(StrEnum):
    HIGH = "high"


@dataclasses.dataclass(frozen=True, slots=True)
class LaterAlert:
    """Stands in for Alert with fields another change adds later."""

    uid: str
    status: AlertStatus
    started_at: float
    peak_score: float
    severity: Severity
    reasons: tuple[str, ...]
    top_features: tuple[FeatureContribution, ...]


def test_payload_is_generic_over_the_dataclass_fields() -> None:
    payload = alert_payload(
        LaterAlert(
            uid="a-9",
            status=AlertStatus.ACKNOWLEDGED,
            started_at=T0,
            peak_score=float("nan"),
            severity=Severity.HIGH,
            reasons=("level shift",),
            top_features=(FeatureContribution("flow", 0.5),),
        )
    )
    assert payload == {
        "uid": "a-9",
        "status": "acknowledged",
        "started_at": "2023-11-14T22:13:20+00:00",
        "peak_score": None,  # JSON has no NaN
        "severity": "high",
        "reasons": ["level shift"],
        "top_features": [{"feature": "flow", "share": 0.5}],
    }
    json.dumps(payload, allow_nan=False)
    with pytest.raises(TypeError):
        alert_payload({"uid": "x"})


def test_every_alert_field_is_in_the_payload() -> None:
    payload = alert_payload(alert())
    # The alert's reason is published as "why": "reason" belongs to the event.
    fields = {f.name for f in dataclasses.fields(Alert)} - {"reason"} | {"why"}
    assert set(payload) == fields
    assert payload["ended_at"] is None
    assert payload["updated_at"] == "2023-11-14T22:13:20+00:00"


def test_publish_config_defaults_and_prefix_rules() -> None:
    config = PublishConfig()
    assert (config.enabled, config.prefix, config.qos, config.ha_discovery) == (
        True,
        "sentinel",
        1,
        False,
    )
    assert PublishConfig(prefix="plant/sentinel").prefix == "plant/sentinel"
    for bad in ("a/#", "+", "/a", "a/", "a//b"):
        with pytest.raises(ValidationError):
            PublishConfig(prefix=bad)
    with pytest.raises(ValidationError):
        PublishConfig.model_validate({"qos": 0})  # as a config file would give it
    with pytest.raises(ValidationError):
        PublishConfig(update_peak_factor=0.5)
