"""/api/v1/alerts against a running daemon: the CLI's filters, pages, show, ack, resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.store import AlertStore
from simulators.broker import PrivateBroker
from tests.api.helpers import Api, start_api
from tests.store.helpers import T0

pytestmark = [pytest.mark.integration]


def test_alerts_are_listed_with_the_cli_filters_and_paged(api: Api) -> None:
    body = api.client.get("/api/v1/alerts").json()
    assert [a["uid"] for a in body["items"]] == ["a-2", "a-1", "a-3"]  # newest first
    assert (body["limit"], body["offset"], body["next_offset"]) == (100, 0, None)
    first = body["items"][1]
    assert first["status"] == "open"
    assert first["top_features"] == [
        {"feature": "current", "share": 0.75},
        {"feature": "vibration", "share": 0.25},
    ]
    # ISO 8601 in UTC, whatever the database's own time zone.
    started = datetime.fromisoformat(first["started_at"])
    assert started == datetime.fromtimestamp(T0 + 100, UTC)
    assert started.utcoffset() == timedelta(0)

    def uids(**params: str) -> list[str]:
        answer = api.client.get("/api/v1/alerts", params=params)
        assert answer.status_code == 200, answer.text
        return [a["uid"] for a in answer.json()["items"]]

    assert uids(device="p1") == ["a-1"]
    assert uids(status="closed") == ["a-2"]
    assert uids(stream="fan") == []
    assert uids(since=datetime.fromtimestamp(T0 + 50, UTC).isoformat()) == ["a-2", "a-1"]
    assert uids(since="30m") == []  # seeded long ago
    page = api.client.get("/api/v1/alerts", params={"limit": 2}).json()
    assert [a["uid"] for a in page["items"]] == ["a-2", "a-1"]
    assert page["next_offset"] == 2
    rest = api.client.get("/api/v1/alerts", params={"limit": 2, "offset": 2}).json()
    assert ([a["uid"] for a in rest["items"]], rest["next_offset"]) == (["a-3"], None)


def test_an_alert_is_shown_acknowledged_and_resolved_through_the_store(api: Api) -> None:
    listed = {a["uid"]: a for a in api.client.get("/api/v1/alerts").json()["items"]}
    alert_id = listed["a-1"]["id"]
    shown = api.client.get(f"/api/v1/alerts/{alert_id}")
    assert shown.status_code == 200
    assert shown.json() == listed["a-1"]

    with api.write() as writer:
        acked = writer.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "pump checked"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged"
        assert acked.json()["ack_note"] == "pump checked"
        assert acked.json()["acknowledged_at"] is not None
        resolved = writer.post(f"/api/v1/alerts/{alert_id}/resolve")  # no body: no note
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["status"] == "resolved"
        assert resolved.json()["ack_note"] == "pump checked"
        missing = writer.post("/api/v1/alerts/999999/ack", json={})
        assert missing.status_code == 404
        assert missing.json() == {"detail": "no alert with id 999999"}

    store = AlertStore(api.url)
    store.open()
    try:
        record = store.get_alert(alert_id)
        events = store.audit_events(device="p1")
    finally:
        store.close()
    assert record is not None
    assert record.status.value == "resolved"
    assert record.ack_note == "pump checked"
    # The store's own resolve: its audit event, as from `sentinel alerts resolve`.
    assert [e["kind"] for e in events] == ["alert_resolved"]
    assert events[0]["detail"]["alert_id"] == alert_id


def test_bad_requests_get_a_4xx_that_says_what_is_wrong(api: Api) -> None:
    answer = api.client.get("/api/v1/alerts/424242")
    assert (answer.status_code, answer.json()["detail"]) == (404, "no alert with id 424242")
    answer = api.client.get("/api/v1/alerts", params={"since": "yesterday"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "query.since: Value error, 'yesterday': use a duration like 30m, 2h, 7d, or an ISO "
        "8601 time"
    )
    answer = api.client.get("/api/v1/alerts", params={"status": "gone", "limit": 0})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "query.status: Input should be 'open', 'acknowledged'" in detail
    assert "query.limit: Input should be greater than or equal to 1" in detail
    assert {tuple(e["loc"]) for e in answer.json()["errors"]} == {
        ("query", "status"),
        ("query", "limit"),
    }
    answer = api.client.get("/api/v1/alerts/first")
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("path.alert_id: Input should be a valid integer")
    answer = api.client.get("/api/v1/nothing-here")
    assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"})
    with api.write() as writer:
        answer = writer.post("/api/v1/alerts/1/ack", json={"note": "x", "by": "me"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "body.by: Extra inputs are not permitted"


def test_writes_need_the_token(api: Api) -> None:
    alert_id = api.client.get("/api/v1/alerts").json()["items"][0]["id"]
    answer = api.client.post(f"/api/v1/alerts/{alert_id}/ack")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer.json()["detail"]
    wrong = api.client.post(
        f"/api/v1/alerts/{alert_id}/resolve", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert wrong.status_code == 401
    assert api.client.get(f"/api/v1/alerts/{alert_id}").json()["status"] == "closed"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_writes_are_refused_when_no_token_is_configured(
    tmp_path: Path, mqtt_broker: PrivateBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for api in start_api(tmp_path, mqtt_broker, db_url, monkeypatch, token=None):
        alert_id = api.client.get("/api/v1/alerts").json()["items"][0]["id"]
        with api.write() as writer:  # whatever it sends
            answer = writer.post(f"/api/v1/alerts/{alert_id}/ack")
            assert answer.status_code == 403
            assert answer.json()["detail"].startswith("write actions are disabled: no API token")
            answer = writer.post("/api/v1/models/pump/rollback")
            assert answer.status_code == 403
        assert api.client.get(f"/api/v1/alerts/{alert_id}").json()["acknowledged_at"] is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_api_can_be_switched_off(
    tmp_path: Path, mqtt_broker: PrivateBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for api in start_api(tmp_path, mqtt_broker, db_url, monkeypatch, health={"api": False}):
        assert api.client.get("/api/v1/alerts").status_code == 404
        assert api.client.get("/api/v1/openapi.json").status_code == 404
        assert api.client.get("/healthz").status_code in (200, 503)
        assert api.client.get("/metrics").text.startswith("# HELP")
