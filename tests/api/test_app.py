"""The app's error boundaries, served by the daemon's HTTP server, with a store that fails on
purpose."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from sentinel.api import ApiContext, build_app
from sentinel.daemon.health import Health
from sentinel.daemon.metrics import Metrics
from sentinel.daemon.server import HttpServer
from sentinel.errors import StoreError
from sentinel.model import ModelRegistry
from sentinel.store import AlertStore, DeviceRecord
from tests.api.helpers import seed_alerts
from tests.fakes import make_config
from tests.store.helpers import T0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    seed_alerts(url)
    alert_store = AlertStore(url)
    alert_store.open()
    try:
        yield alert_store
    finally:
        alert_store.close()


@contextmanager
def client(store: AlertStore, tmp_path: Path, **overrides: Any) -> Iterator[httpx.Client]:
    fields: dict[str, Any] = {
        "config": make_config,
        "store": store,
        "registry": ModelRegistry(tmp_path / "models"),
        "health": Health(),
        "metrics": Metrics(),
        "model_versions": lambda: {"pump": "v1"},
        "describe_devices": lambda keys: None,  # a worker that does not answer
        "reload_model": None,
        "token": None,
    }
    fields.update(overrides)
    server = HttpServer("127.0.0.1", 0, build_app(ApiContext(**fields)))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
            yield http
    finally:
        server.stop()


@pytest.mark.allow_log_exceptions  # the bug's traceback is logged, once
def test_a_bug_is_a_json_500_logged_once(
    store: AlertStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "list_alerts", broken)
    with capture_logs() as logs, client(store, tmp_path) as http:
        answer = http.get("/api/v1/alerts")
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error (see the daemon's log)"}
    failures = [e for e in logs if e["event"] == "api_request_failed"]
    assert len(failures) == 1
    assert failures[0]["path"] == "/api/v1/alerts"


def test_a_database_that_cannot_be_reached_is_a_503(
    store: AlertStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(alert_id: int) -> None:
        raise StoreError("read from sqlite:///x failed: disk I/O error")

    monkeypatch.setattr(store, "get_alert", down)
    with client(store, tmp_path) as http:
        answer = http.get("/api/v1/alerts/1")
    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "database unavailable: read from sqlite:///x failed: disk I/O error"
    }


def test_a_device_the_worker_did_not_describe_is_unknown(
    store: AlertStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = DeviceRecord("pump", "p1", T0, 5, store.list_alerts()[0].started_at, 0)
    monkeypatch.setattr(store, "devices", lambda *args, **kwargs: [record])
    with client(store, tmp_path) as http:
        body = http.get("/api/v1/devices/pump/p1").json()
    assert (body["state"], body["threshold"], body["readings"]) == ("unknown", None, 5)
    assert body["model_version"] == "v1"


def test_the_server_frees_its_port_when_stopped(store: AlertStore, tmp_path: Path) -> None:
    """A SIGHUP that changes the streams restarts the components in-process: the new
    server must bind the same port at once; a busy port fails the start with OSError."""
    context = ApiContext(
        config=make_config,
        store=store,
        registry=ModelRegistry(tmp_path / "models"),
        health=Health(),
        metrics=Metrics(),
        model_versions=dict,
        describe_devices=lambda keys: None,
        reload_model=None,
        token=None,
    )
    first = HttpServer("127.0.0.1", 0, build_app(context))
    first.start()
    port = first.port
    try:
        with pytest.raises(OSError, match="in use"):
            HttpServer("127.0.0.1", port, build_app(context)).start()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "starting"
    finally:
        first.stop()
    second = HttpServer("127.0.0.1", port, build_app(context))
    second.start()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 503
    finally:
        second.stop()


def test_the_web_ui_is_served_with_a_policy_that_keeps_it_to_its_own_files(
    store: AlertStore, tmp_path: Path
) -> None:
    with client(store, tmp_path) as http:
        home = http.get("/")
        assert home.status_code == 307
        assert home.headers["location"] == "/ui/"
        page = http.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        files = {name: http.get(f"/ui/{name}") for name in ("app.js", "style.css", "favicon.svg")}
        assert {name: r.status_code for name, r in files.items()} == dict.fromkeys(files, 200)
        assert (
            files["app.js"]
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert http.get("/ui/missing.js").status_code == 404
    # Nothing from elsewhere: no URL with a scheme but the SVG namespace, no inline script.
    for text in (page.text, files["app.js"].text, files["style.css"].text):
        assert "https://" not in text
        assert "//cdn" not in text
        assert [u for u in re.findall(r"https?://[^\"' )]+", text) if "w3.org" not in u] == []
    assert "<script>" not in page.text
    assert ".innerHTML" not in files["app.js"].text


def test_without_the_api_there_is_no_ui(store: AlertStore, tmp_path: Path) -> None:
    context = ApiContext(
        config=make_config,
        store=store,
        registry=ModelRegistry(tmp_path / "models"),
        health=Health(),
        metrics=Metrics(),
        model_versions=dict,
        describe_devices=lambda keys: None,
        reload_model=None,
        token=None,
    )
    server = HttpServer("127.0.0.1", 0, build_app(context, api=False))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as http:
            assert http.get("/ui/").status_code == 404
            assert http.get("/").status_code == 404
    finally:
        server.stop()
