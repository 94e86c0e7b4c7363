"""The start-up check that a PostgreSQL server keeps acknowledged commits (issue #22)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from structlog.testing import capture_logs

from sentinel.store import AlertStore
from sentinel.store.durability import (
    AUDIT_KIND,
    postgres_durability_problems,
    read_postgres_settings,
    warn_not_durable,
)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"synchronous_commit": "on", "fsync": "on"}, []),
        ({"synchronous_commit": "local", "fsync": "on"}, []),
        ({"synchronous_commit": "remote_write", "fsync": "on"}, []),
        ({"synchronous_commit": "off", "fsync": "on"}, ["synchronous_commit"]),
        ({"synchronous_commit": "OFF", "fsync": "on"}, ["synchronous_commit"]),
        ({"synchronous_commit": "on", "fsync": "off"}, ["fsync"]),
        ({"synchronous_commit": "off", "fsync": "off"}, ["synchronous_commit", "fsync"]),
    ],
)
def test_problems_name_each_unsafe_setting(settings: dict[str, str], named: list[str]) -> None:
    problems = postgres_durability_problems(settings)
    assert [p.split(" = ")[0] for p in problems] == named


def test_sqlite_is_not_checked(tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'sentinel.db'}")
    store.open()
    try:
        store.migrate()
        assert warn_not_durable(store) == []
        assert store.audit_events() == []
    finally:
        store.close()


@pytest.mark.postgres
def test_settings_are_read_from_the_real_connection(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert read_postgres_settings(conn) == {"synchronous_commit": "on", "fsync": "on"}
            conn.execute(text("SET synchronous_commit = off"))  # this session only
            settings = read_postgres_settings(conn)
            assert settings["synchronous_commit"] == "off"
            assert [p.split(" = ")[0] for p in postgres_durability_problems(settings)] == [
                "synchronous_commit"
            ]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_durable_server_gets_no_warning(postgres_url: str) -> None:
    store = AlertStore(postgres_url)
    store.open()
    try:
        store.migrate()
        with capture_logs() as logs:
            assert warn_not_durable(store) == []
        assert not [e for e in logs if e["event"] == "database_not_durable"]
        assert store.audit_events() == []
    finally:
        store.close()


@pytest.mark.postgres
def test_asynchronous_commit_is_warned_and_audited(postgres_url: str) -> None:
    # fsync cannot be set per database; synchronous_commit can, and every connection the
    # store opens then runs with it, as with a server-wide setting.
    name = make_url(postgres_url).database
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    store = AlertStore(postgres_url)
    store.open()
    try:
        store.migrate()
        with capture_logs() as logs:
            problems = warn_not_durable(store)
        assert [p.split(" = ")[0] for p in problems] == ["synchronous_commit"]
        [warning] = [e for e in logs if e["event"] == "database_not_durable"]
        assert warning["log_level"] == "warning"
        assert warning["problem"] == problems[0]
        [event] = store.audit_events()
        assert event["kind"] == AUDIT_KIND
        assert event["detail"]["settings"] == {"synchronous_commit": "off", "fsync": "on"}
        assert event["detail"]["problems"] == problems
    finally:
        store.close()
