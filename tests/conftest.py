"""Shared fixtures: private Mosquitto and nats-server, PostgreSQL isolation, log guards."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sentinel.logs import configure_logging
from simulators.broker import PrivateBroker, find_mosquitto
from simulators.nats_server import PrivateNats, find_nats_server
from tests.tls_helpers import BrokerPki, have_openssl, make_pki

POSTGRES_ENV = "SENTINEL_TEST_POSTGRES_URL"
# Set by .ci/run: a skipped integration or PostgreSQL test is then a failure, so CI cannot
# go green while the tests that matter quietly did not run.
REQUIRE_ENV = "SENTINEL_REQUIRE_INTEGRATION"
_REQUIRED_MARKERS = ("integration", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_log_exceptions: the test expects exceptions logged at a thread boundary"
    )
    configure_logging("debug", "console")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get(REQUIRE_ENV) == "1"
        and any(item.get_closest_marker(m) for m in _REQUIRED_MARKERS)
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"required test was skipped ({REQUIRE_ENV}=1): {reason}"


# -- log guard --------------------------------------------------------------------------


class _ExceptionCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg if isinstance(record.msg, dict) else {}
        if record.exc_info or event.get("exc_info"):
            self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_log_exception(request: pytest.FixtureRequest) -> Iterator[None]:
    """An exception swallowed and logged at a thread boundary fails the test that caused it
    (Home Assistant's fail_on_log_exception)."""
    collector = _ExceptionCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
    if collector.records and not request.node.get_closest_marker("allow_log_exceptions"):
        events = [
            r.msg.get("event") if isinstance(r.msg, dict) else r.getMessage()
            for r in collector.records
        ]
        pytest.fail(f"exceptions were logged at a thread boundary: {events}")


# -- MQTT -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A private Mosquitto on a free port, shared by the session (never the one on 1883)."""
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary (apt-get install mosquitto)")
    broker = PrivateBroker(prefer="mosquitto", workdir=tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker of the test's own, for tests that restart or break it."""
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary (apt-get install mosquitto)")
    broker = PrivateBroker(prefer="mosquitto", persistence=True, workdir=tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrivateBroker, BrokerPki]]:
    """A private Mosquitto whose listener speaks TLS, with the throwaway CA that signed its
    certificate and an unrelated one (tests/tls_helpers.py)."""
    if find_mosquitto() is None or not have_openssl():
        pytest.skip("needs the mosquitto and openssl binaries")
    work = tmp_path_factory.mktemp("tls-broker")
    pki = make_pki(work / "pki")
    broker = PrivateBroker(prefer="mosquitto", workdir=work, tls=pki.broker)
    broker.start()
    try:
        yield broker, pki
    finally:
        broker.stop()


# -- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin = make_url(postgres_admin_url)
    if admin.drivername == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"sentinel_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a real SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sentinel.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- NATS -------------------------------------------------------------------------------


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A nats-server with JetStream, its MQTT listener and the subject mappings of
    ``tests.nats_helpers`` (4 partitions), of the test's own: tests restart it."""
    from tests.nats_helpers import stream_mappings

    if find_nats_server() is None:
        pytest.skip("no nats-server binary (apt-get install nats-server)")
    server = PrivateNats(workdir=tmp_path / "nats", mappings=stream_mappings(), mqtt=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
