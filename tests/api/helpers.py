"""A daemon with its API for the API tests, and the alerts they find in its database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sentinel.records import AlertStatus, Severity, WriteBatch
from sentinel.store import AlertStore
from simulators.broker import PrivateBroker
from tests.e2e_helpers import RunningApp, daemon_config, running_app
from tests.ops_helpers import install_untrained_model
from tests.store.helpers import T0, make_alert

TOKEN = "s3cret-token-for-tests"


def seed_alerts(url: str) -> None:
    """Three alerts, newest first by start: p2 (closed, critical), p1 (open), p3 (open)."""
    store = AlertStore(url)
    store.open()
    try:
        store.migrate()
        store.write(
            [
                WriteBatch(
                    alerts=(
                        make_alert("a-1", device="p1", started_at=T0 + 100),
                        make_alert(
                            "a-2",
                            device="p2",
                            status=AlertStatus.CLOSED,
                            started_at=T0 + 200,
                            ended_at=T0 + 260,
                            severity=Severity.CRITICAL,
                        ),
                        make_alert("a-3", device="p3", started_at=T0),
                    )
                )
            ]
        )
    finally:
        store.close()


@dataclass
class Api:
    running: RunningApp
    client: httpx.Client  # base URL the daemon's port; no token
    url: str  # the database's

    def write(self) -> httpx.Client:
        """A client that sends the token."""
        return httpx.Client(
            base_url=str(self.client.base_url),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )


def start_api(
    tmp_path: Path,
    broker: PrivateBroker,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    token: str | None = TOKEN,
    **sections: dict[str, object],
) -> Iterator[Api]:
    """The daemon with an untrained model and three seeded alerts; its API token in a
    systemd-style credentials directory, as LoadCredential= gives it."""
    state = tmp_path / "state"
    install_untrained_model(state)
    seed_alerts(url)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    if token is not None:
        (credentials / "api_token").write_text(token + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.delenv("SENTINEL_API_TOKEN", raising=False)
    # The simulated fleet's readings are from 2024: the score history keeps them (its
    # retention is wall clock) for the tests that read it.
    sections = {"history": {"retention": 315_360_000.0}, **sections}
    config = daemon_config(
        state, broker, database_url=url, client_id=f"api-{tmp_path.name}"[:60], **sections
    )
    with running_app(config) as running:
        server = running.app.health_server
        assert server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield Api(running, client, url)
