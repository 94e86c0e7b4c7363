"""A running daemon with its REST API, on SQLite and (given a URL) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import PrivateBroker
from tests.api.helpers import Api, start_api


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def api(
    tmp_path: Path, mqtt_broker: PrivateBroker, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    yield from start_api(tmp_path, mqtt_broker, db_url, monkeypatch)
