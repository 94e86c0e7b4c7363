"""Database fixtures: every store test runs on SQLite and, when a URL is given, PostgreSQL.

PostgreSQL tests need ``SENTINEL_TEST_POSTGRES_URL`` (an account allowed to create
databases, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and are skipped
without it; each test gets a fresh ``sentinel_test_<random>`` database from the
``postgres_url`` fixture in ``tests/conftest.py``, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.store import AlertStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: open() must create it.
        return f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    """An open store whose schema was built by the migrations."""
    alert_store = AlertStore(db_url, busy_timeout_ms=1000)
    alert_store.open()
    alert_store.migrate()
    try:
        yield alert_store
    finally:
        alert_store.close()
