"""A running daemon with its REST API, on SQLite and (given a URL) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from simulators.broker import PrivateBroker
from tests.api.helpers import TOKEN, seed_alerts
from tests.e2e_helpers import RunningApp, daemon_config, running_app
from tests.ops_helpers import install_untrained_model


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


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
    config = daemon_config(
        state, broker, database_url=url, client_id=f"api-{tmp_path.name}"[:60], **sections
    )
    with running_app(config) as running:
        server = running.app.health_server
        assert server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield Api(running, client, url)


@pytest.fixture
def api(
    tmp_path: Path, mqtt_broker: PrivateBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    yield from start_api(tmp_path, mqtt_broker, db_url, monkeypatch)
