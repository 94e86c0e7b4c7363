"""sentinel alerts resolve, and severity and reasons in alerts list/show, on real databases."""

from __future__ import annotations

import csv
import json

import pytest

from sentinel.cli.main import main
from sentinel.records import (
    Alert,
    AlertReason,
    AlertStatus,
    FeatureContribution,
    Severity,
    ThresholdState,
    WriteBatch,
)
from sentinel.store import AlertStore

T0 = 1_700_000_000.0


def seed(url: str) -> int:
    store = AlertStore(url)
    store.open()
    store.migrate()
    reason = AlertReason(
        ThresholdState("spot", 2.5, 4100, 1e-3, True),
        2e-7,
        "0123456789abcdef",
        ("flow", 14.2),
        stuck=("current", 40, 24),
        relation=("pressure", 9.5),
        noise=("vibration", 3.25),
        period=("fan_kw", 6.5),
    )
    alert = Alert(
        "uid-r",
        "pump",
        "pump-007",
        AlertStatus.OPEN,
        T0,
        T0 + 40,
        None,
        12.5,
        2.5,
        (FeatureContribution("pressure", 0.9), FeatureContribution("flow", 0.1)),
        "v1",
        6,
        severity=Severity.CRITICAL,
        reason=reason,
    )
    store.write([WriteBatch(alerts=(alert,))])
    alert_id = store.list_alerts()[0].id
    store.close()
    return alert_id


def test_alerts_list_and_show_carry_severity_and_reason(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alert_id = seed(database_url)
    assert main(["alerts", "list", "--database", database_url]) == 0
    table = capsys.readouterr().out
    assert "SEVERITY" in table.splitlines()[0]
    assert "critical" in table
    assert main(["alerts", "show", str(alert_id), "--database", database_url]) == 0
    text = capsys.readouterr().out
    assert "severity" in text
    assert "critical" in text
    assert "2.5 (spot, 4100 normal windows, risk 0.001)" in text
    assert "2e-07" in text
    assert "0123456789abcdef" in text
    assert "flow, 14.2 x its noise" in text  # a spike fired it
    assert "current held one value for 40 readings (limit 24)" in text  # and a frozen channel
    assert "pressure left its relations to the other features (9.5 x" in text  # and a relation
    assert "vibration's readings were 3.25 x as rough" in text  # and a noisy channel
    assert "fan_kw's last period was 6.5 x further from every earlier one" in text  # a day


def test_alerts_csv_holds_structured_columns_as_json(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every dict or list column is JSON, as top_features always was: the reason column was
    a Python repr (single quotes, True/None) that no CSV consumer could parse."""
    seed(database_url)
    assert main(["alerts", "list", "--format", "csv", "--database", database_url]) == 0
    [row] = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    reason = json.loads(row["reason"])
    assert reason["threshold_method"] == "spot"
    assert reason["threshold_warm"] is True
    assert reason["spike_feature"] == "flow"
    assert json.loads(row["top_features"])[0] == {"feature": "pressure", "share": 0.9}


def test_alerts_resolve(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    alert_id = seed(database_url)
    argv = ["alerts", "resolve", str(alert_id), "--note", "pump replaced"]
    assert main([*argv, "--database", database_url]) == 0
    assert f"alert {alert_id} resolved" in capsys.readouterr().out
    listing = ["alerts", "list", "--status", "resolved", "--format", "json"]
    assert main([*listing, "--database", database_url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [alert_id]
    assert rows[0]["resolve_note"] == "pump replaced"
    assert rows[0]["resolved_at"] is not None
    assert rows[0]["ended_at"] is not None
    assert main(["alerts", "show", str(alert_id), "--database", database_url]) == 0
    assert "pump replaced" in capsys.readouterr().out
    assert main(["alerts", "resolve", "999999", "--database", database_url]) == 1
    assert "no alert with id 999999" in capsys.readouterr().err
