"""/api/v1/devices and /api/v1/models against a running daemon fed by the fleet simulator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sentinel.model import ModelRegistry
from tests.api.helpers import Api
from tests.e2e_helpers import readings_committed, wait_for
from tests.ops_helpers import VERSION, install_untrained_model, publish_fleet

pytestmark = [pytest.mark.integration]

START = 1_704_067_200.0  # publish_fleet's first timestamp


def test_devices_show_last_reading_threshold_and_state(api: Api) -> None:
    broker = api.running.app.config.mqtt
    sent = publish_fleet(f"mqtt://{broker.host}:{broker.port}", broker.protocol, 2, steps=100)
    wait_for(lambda: readings_committed(api.url) == sent, 60, "readings committed")
    body = api.client.get("/api/v1/devices").json()
    assert [(d["stream"], d["device"]) for d in body["items"]] == [
        ("pump", "pump-000"),
        ("pump", "pump-001"),
    ]
    assert body["next_offset"] is None
    device = body["items"][0]
    assert device["readings"] == sent // 2
    last = datetime.fromisoformat(device["last_reading_at"])
    assert last == datetime.fromtimestamp(device["last_ts"], UTC)
    assert START < device["last_ts"] < START + 200
    assert device["ahead_of_clock"] is False
    assert device["model_version"] == VERSION
    # Held by the worker, which has judged its windows: the threshold they met.
    threshold = device["threshold"]
    assert threshold is not None, device
    assert threshold["method"] == "quantile"
    assert threshold["value"] > 0
    expected = "alerting" if device["open_alerts"] else "normal" if threshold["warm"] else None
    assert device["state"] == (expected or "warming_up")

    one = api.client.get("/api/v1/devices/pump/pump-001")
    assert one.status_code == 200
    assert one.json() == body["items"][1]
    page = api.client.get("/api/v1/devices", params={"limit": 1, "offset": 1}).json()
    assert [d["device"] for d in page["items"]] == ["pump-001"]
    missing = api.client.get("/api/v1/devices/pump/pump-999")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no stored state for device 'pump-999' of stream 'pump'"
    assert api.client.get("/api/v1/devices", params={"stream": "no/such"}).status_code == 422

    # The score history of the minutes it was scored in (event time: the fleet's 2024).
    history = api.client.get(
        "/api/v1/devices/pump/pump-000/history",
        params={"since": "2024-01-01T00:00:00Z", "until": "2024-01-02T00:00:00Z"},
    ).json()
    minutes = history["items"]
    assert minutes, history
    assert history["truncated"] is False
    assert sum(m["windows"] for m in minutes) > 0
    first = datetime.fromisoformat(minutes[0]["start"]).timestamp()
    assert START <= first < START + 200
    assert all(m["max_score"] >= 0 and m["threshold"] > 0 for m in minutes)
    # By default the last day: nothing of 2024.
    recent = api.client.get("/api/v1/devices/pump/pump-000/history").json()
    assert recent["items"] == []
    short = api.client.get(
        "/api/v1/devices/pump/pump-000/history",
        params={"since": "2024-01-01T00:00:00Z", "until": "2024-01-02T00:00:00Z", "limit": 1},
    ).json()
    assert short["items"] == minutes[-1:]
    assert short["truncated"] is (len(minutes) > 1)


def test_models_are_listed_shown_activated_and_rolled_back(api: Api) -> None:
    registry = ModelRegistry(api.running.app.config.models_dir)
    second = install_untrained_model(api.running.app.config.state_dir, "20250102T000000Z-second")
    registry.activate("pump", VERSION)  # VERSION runs; `second` was active a moment
    pipeline = api.running.app.pipeline
    assert pipeline is not None

    listed = api.client.get("/api/v1/models").json()["items"]
    assert [(m["version"], m["role"]) for m in listed] == [
        (second, "previous"),
        (VERSION, "active"),
    ]
    shown = api.client.get(f"/api/v1/models/pump/{VERSION}").json()
    assert (shown["active"], shown["running"], shown["previous"]) == (True, True, False)
    assert shown["meta"]["window"] > 0
    assert "scores" not in shown["meta"]["calibration"]

    with api.write() as writer:
        answer = writer.post(f"/api/v1/models/pump/{second}/activate")
        assert answer.status_code == 200, answer.text
        assert answer.json()["swapped"] is True
        assert registry.active_version("pump") == second
        # The running pipeline swaps it in, as after `sentinel models activate`.
        wait_for(lambda: pipeline.model_versions()["pump"] == second, 30, "the swap")
        assert api.client.get(f"/api/v1/models/pump/{second}").json()["running"] is True

        answer = writer.post("/api/v1/models/pump/rollback")
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == VERSION
        wait_for(lambda: pipeline.model_versions()["pump"] == VERSION, 30, "the rollback")

        missing = writer.post("/api/v1/models/pump/20990101T000000Z-none/activate")
        assert missing.status_code == 404
        assert (
            missing.json()["detail"] == "no model version '20990101T000000Z-none' of stream 'pump'"
        )
        unknown = writer.post("/api/v1/models/fan/rollback")
        assert (unknown.status_code, unknown.json()["detail"]) == (
            404,
            "no stream 'fan' in the config (streams: pump)",
        )
    assert registry.active_version("pump") == VERSION
    assert api.client.get("/api/v1/models", params={"stream": "fan"}).status_code == 404


def test_openapi_document_describes_every_endpoint(api: Api) -> None:
    document = api.client.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/healthz",
        "/metrics",
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}",
        "/api/v1/alerts/{alert_id}/ack",
        "/api/v1/alerts/{alert_id}/resolve",
        "/api/v1/devices",
        "/api/v1/devices/{stream}/{device}",
        "/api/v1/devices/{stream}/{device}/history",
        "/api/v1/models",
        "/api/v1/models/{stream}/{version}",
        "/api/v1/models/{stream}/{version}/activate",
        "/api/v1/models/{stream}/rollback",
    }
    ack = document["paths"]["/api/v1/alerts/{alert_id}/ack"]["post"]
    assert ack["security"] == [{"apiToken": []}]
    assert document["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    started = document["components"]["schemas"]["Alert"]["properties"]["started_at"]
    assert started["format"] == "date-time"
    # No page that loads scripts from a CDN.
    assert api.client.get("/docs").status_code == 404
