"""End to end: simulator -> real Mosquitto -> daemon -> real database.

These are the tests that show the daemon does its job: injected anomalies become alerts,
a SIGKILL loses no reading the broker held and duplicates no alert, bad credentials stop
the daemon with a clear error, and a broker restart is ridden out.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel.daemon.app import EXIT_FATAL_CONNECTION
from sentinel.ingest.mqtt import MqttSource
from sentinel.ingest.mqtt_process import ProcessMqttSource
from sentinel.records import AlertStatus
from sentinel.store import AlertStore
from simulators.broker import PrivateBroker, find_mosquitto
from simulators.fleet import FEATURES
from tests.e2e_helpers import (
    HOP,
    REPO,
    TRAINS_IN_BODY,
    WINDOW,
    all_alerts,
    daemon_config,
    finish,
    fleet_detection_scenario,
    install_model,
    read_json,
    readings_committed,
    run_fleet,
    running_app,
    start_daemon,
    subprocess_env,
    train_fleet_model,
    wait_for,
    write_toml,
)
from tests.ops_helpers import install_untrained_model
from tests.tls_helpers import BROKER_NAME, BrokerPki

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def fleet_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once on clean simulated pump data, copied into each test's state."""
    models = tmp_path_factory.mktemp("fleet-models")
    train_fleet_model(models)
    return models


@TRAINS_IN_BODY
def test_cold_start_then_injected_anomalies_become_alerts(
    mqtt_broker: PrivateBroker, tmp_path: Path, database_url: str
) -> None:
    """The product path from nothing: no model, clean operation, cold-start training, then
    faults (see ``fleet_detection_scenario`` for the scenario and how it is scored)."""
    result = fleet_detection_scenario(mqtt_broker, tmp_path, database_url)
    print(f"\n{result.summary()}")
    assert result.rejected == {}
    # Product defaults (threshold q0.995 x 1.5, open after 2 windows) favour few false
    # alerts; docs/BENCHMARKS.md has the measured trade-off. These floors catch regressions.
    assert result.visible >= 30, "the scenario should inject enough anomalies to measure recall"
    assert result.recall >= 0.08, result.summary()
    assert len(result.caught) >= 4, result.summary()
    assert result.false_alerts <= 0.3 * result.device_hours, result.summary()
    for alert in result.alerts:
        assert alert.top_features, "every alert names the features that contributed"
        assert alert.model_version
        # Fired by the model's score, or by a check beside it -- a spiking reading, a frozen
        # channel, a channel that left the others -- that then says which feature.
        reason = alert.reason or {}
        named = {reason.get(f"{check}_feature") for check in ("spike", "stuck", "relation")}
        assert alert.peak_score > alert.threshold or named & set(FEATURES), alert


@pytest.mark.parametrize("client_process", [False, True], ids=["in-process", "client-process"])
def test_sigkill_mid_stream_loses_nothing_and_duplicates_no_alert(
    private_broker: PrivateBroker, fleet_models: Path, tmp_path: Path, client_process: bool
) -> None:
    """With the MQTT client in a process of its own too: the kernel takes it down with the
    daemon, before it can acknowledge anything the daemon did not commit."""
    state = tmp_path / "state"
    install_model(fleet_models, state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, private_broker, database_url=url)
    config["mqtt"]["client_process"] = client_process
    config_path = write_toml(tmp_path / "sentinel.toml", config)
    log = tmp_path / "daemon.log"

    daemon = start_daemon(config_path, log)
    wait_for(lambda: b"mqtt_subscribed" in log.read_bytes(), 60, "the daemon to subscribe")
    fleet = run_fleet(
        private_broker,
        tmp_path,
        "--devices",
        "4",
        "--rate",
        "150",
        "--steps",
        "2400",
        "--step",
        "1",
        "--seed",
        "5",
        "--warmup",
        "300",
        "--anomaly-rate",
        "8",
    )
    wait_for(lambda: readings_committed(url) > 2000, 60, "the daemon to take in readings")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(120)
    killed_at = readings_committed(url)
    time.sleep(1.0)  # the simulator keeps publishing while the daemon is down
    daemon = start_daemon(config_path, log)
    finish(fleet)
    total = read_json(tmp_path / "summary.json")["total"]
    assert killed_at < total, "the kill should happen mid-stream"
    wait_for(lambda: readings_committed(url) >= total, 120, "every reading committed")
    time.sleep(0.5)  # nothing more may arrive: an extra count would be a double count
    assert readings_committed(url) == total

    daemon.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert daemon.wait(120) == 0
    print(
        f"\nkilled at {killed_at}/{total} readings; SIGTERM exit took "
        f"{time.monotonic() - started:.1f} s"
    )

    alerts = all_alerts(url)
    assert alerts, "the scenario injects anomalies: some alerts are expected"
    by_device: dict[str, list[Any]] = {}
    for alert in sorted(alerts, key=lambda a: a.started_at):
        by_device.setdefault(alert.device, []).append(alert)
    for device, device_alerts in by_device.items():
        for earlier, later in itertools.pairwise(device_alerts):
            assert earlier.status is AlertStatus.CLOSED, f"{device}: two alerts open at once"
            assert earlier.ended_at is not None
            assert later.started_at > earlier.ended_at, f"{device}: overlapping (duplicate) alerts"

    # The score history commits with the readings: a window counts once, however the kill
    # fell between commits. A restart only loses windows (its first partial window), so
    # no device has more than its readings make windows (issue #25).
    store = AlertStore(url)
    store.open()
    try:
        for (stream, device), progress in store.device_progress().items():
            windows = sum(b.windows for b in store.score_history(stream, device))
            assert 0 < windows <= (progress.readings - WINDOW) // HOP + 1, device
    finally:
        store.close()


@pytest.mark.parametrize("client_process", [False, True], ids=["in-process", "client-process"])
def test_bad_credentials_stop_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_process: bool
) -> None:
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary")
    broker = PrivateBroker(prefer="mosquitto", users={"sentinel": "right"}, workdir=tmp_path / "b")
    broker.start()
    try:
        monkeypatch.setenv("SENTINEL_MQTT_PASSWORD", "wrong")
        config = daemon_config(
            tmp_path / "state",
            broker,
            mqtt={"username": "sentinel", "client_process": client_process},
        )
        import threading

        from structlog.testing import capture_logs

        from sentinel.config import SentinelConfig
        from sentinel.daemon.app import SentinelApp

        app = SentinelApp(SentinelConfig.model_validate(config))
        with capture_logs() as logs:
            result = app.run(threading.Event())
        assert result == EXIT_FATAL_CONNECTION
        assert app.fatal is not None
        # Mosquitto 2.0 answers a wrong MQTT 5 password with "Not authorized".
        assert "user name or password" in app.fatal or "not authorized" in app.fatal
        # It gave up at the first refusal instead of retrying (counted, not timed: a busy
        # machine may take long to start, never to decide).
        events = [e["event"] for e in logs]
        assert events.count("mqtt_refused_fatal") == 1, events
        assert "mqtt_refused" not in events
    finally:
        broker.stop()


@pytest.mark.parametrize("client_process", [False, True], ids=["in-process", "client-process"])
def test_wrong_ca_stops_with_a_clear_error(
    tls_broker: tuple[PrivateBroker, BrokerPki], tmp_path: Path, client_process: bool
) -> None:
    """The fault campaign's wrong-CA case: the daemon exits 3 at once, as for bad
    credentials, and says which CA file failed to verify which broker."""
    import threading

    from sentinel.config import SentinelConfig
    from sentinel.daemon.app import SentinelApp

    broker, pki = tls_broker
    tls = {"enabled": True, "ca_file": str(pki.other_ca)}
    mqtt = {"host": BROKER_NAME, "tls": tls, "client_process": client_process}
    config = daemon_config(tmp_path / "state", broker, mqtt=mqtt)
    app = SentinelApp(SentinelConfig.model_validate(config))
    assert app.run(threading.Event()) == EXIT_FATAL_CONNECTION
    assert app.fatal is not None
    assert str(pki.other_ca) in app.fatal
    assert f"{BROKER_NAME}:{broker.port}" in app.fatal


def test_state_is_created_private_under_a_permissive_umask(
    mqtt_broker: PrivateBroker, tmp_path: Path
) -> None:
    """Issue #19: started by hand with umask 022, the daemon made sentinel.db 0644. Now the
    state directory and what it creates in it are 0750 / 0640, as under systemd."""
    state = tmp_path / "state"
    config_path = write_toml(
        tmp_path / "sentinel.toml", daemon_config(state, mqtt_broker, client_id="umask")
    )
    log = tmp_path / "daemon.log"

    def run_once() -> None:
        log.write_bytes(b"")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config_path)],
            cwd=REPO,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
            umask=0o022,
        )
        try:
            wait_for(lambda: b"mqtt_subscribed" in log.read_bytes(), 60, "the daemon to run")
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(120) == 0, log.read_text()

    run_once()  # a first start: no state yet, a cold start with an empty reservoir
    install_untrained_model(state)
    run_once()  # with a model: its thresholds are saved at the stop
    assert (state / "thresholds.json").exists()
    created = [state, state / "reservoir"]
    created += [state / n for n in ("sentinel.db", "thresholds.json")]
    created += [state / "reservoir" / "pump.sqlite"]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in created}
    assert modes == {
        "state": "0o750",
        "reservoir": "0o750",
        "sentinel.db": "0o640",
        "thresholds.json": "0o640",
        "pump.sqlite": "0o640",
    }


@pytest.mark.parametrize("client_process", [False, True], ids=["in-process", "client-process"])
def test_broker_restart_is_ridden_out_without_loss(
    private_broker: PrivateBroker, fleet_models: Path, tmp_path: Path, client_process: bool
) -> None:
    state = tmp_path / "state"
    install_model(fleet_models, state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    quiet_fleet = ("--devices", "2", "--rate", "0", "--steps", "500", "--anomaly-rate", "0")
    config = daemon_config(state, private_broker, database_url=url)
    config["mqtt"]["client_process"] = client_process
    with running_app(config) as running:
        fleet = run_fleet(
            private_broker, tmp_path, *quiet_fleet, "--seed", "2", "--start", "2024-01-01T00:00:00Z"
        )
        finish(fleet)
        first = read_json(tmp_path / "summary.json")["total"]
        wait_for(lambda: readings_committed(url) == first, 60, "first batch committed")
        private_broker.restart()
        source = running.app.source
        # Its connects and SUBACK, not the protocol's.
        assert isinstance(source, ProcessMqttSource if client_process else MqttSource)
        wait_for(lambda: source.connects >= 2 and source.subscribed, 60, "reconnect")
        # Later readings of the same pumps (a day on), after the broker came back.
        fleet = run_fleet(
            private_broker, tmp_path, *quiet_fleet, "--seed", "2", "--start", "2024-01-02T00:00:00Z"
        )
        finish(fleet)
        second = read_json(tmp_path / "summary.json")["total"]
        wait_for(
            lambda: readings_committed(url) == first + second,
            60,
            "readings after the restart (resubscribed)",
        )
        assert running.app.pipeline is not None
        # The broker may restart before our last acks reach it; it then redelivers those
        # messages (at least once). They must be recognised and skipped, never counted:
        # the exact total above proves that; here, nothing was skipped for another reason.
        rejected = running.app.pipeline.rejections.as_dict()
        assert set(rejected) <= {"duplicate", "out_of_order"}, rejected
    assert running.result == [0]
    # Stopping wrote the thresholds for the next start.
    saved = json.loads((state / "thresholds.json").read_text())
    assert set(saved["streams"]["pump"]["devices"]) == {"pump-000", "pump-001"}


def test_daemon_speaks_mqtt_311_to_a_broker_without_mqtt5(
    fleet_models: Path, tmp_path: Path
) -> None:
    """The demo falls back to amqtt (MQTT 3.1.1 only) where no mosquitto exists."""
    broker = PrivateBroker(prefer="amqtt", workdir=tmp_path / "broker")
    broker.start()
    try:
        assert broker.protocol == "3.1.1"
        state = tmp_path / "state"
        install_model(fleet_models, state)
        url = f"sqlite:///{state / 'sentinel.db'}"
        with running_app(daemon_config(state, broker, database_url=url)) as running:
            fleet = run_fleet(
                broker,
                tmp_path,
                "--devices",
                "2",
                "--rate",
                "0",
                "--steps",
                "200",
                "--seed",
                "4",
                "--anomaly-rate",
                "0",
            )
            finish(fleet)
            total = read_json(tmp_path / "summary.json")["total"]
            wait_for(lambda: readings_committed(url) == total, 60, "readings over MQTT 3.1.1")
        assert running.result == [0]
    finally:
        broker.stop()


@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_daemon_scores_without_torch_unless_asked(
    private_broker: PrivateBroker, fleet_models: Path, tmp_path: Path, runtime: str
) -> None:
    """Issue #23, memory: on the CPU the daemon scores with NumPy and never loads torch
    (~190 MB of its RSS); ``model.runtime = "torch"`` still does. Read off the running
    process's own mappings once it has scored windows."""
    state = tmp_path / "state"
    install_model(fleet_models, state)
    url = f"sqlite:///{state / 'sentinel.db'}"
    config = daemon_config(state, private_broker, database_url=url, model={"runtime": runtime})
    config_path = write_toml(tmp_path / "sentinel.toml", config)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config_path, log)
    try:
        wait_for(lambda: b"mqtt_subscribed" in log.read_bytes(), 60, "the daemon to subscribe")
        fleet = run_fleet(
            private_broker,
            tmp_path,
            *("--devices", "2", "--rate", "200", "--steps", "300", "--step", "1"),
            *("--seed", "5", "--warmup", "300", "--anomaly-rate", "0"),
        )
        finish(fleet)
        total = read_json(tmp_path / "summary.json")["total"]
        wait_for(lambda: readings_committed(url) >= total, 120, "every reading committed")
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(120) == 0, log.read_text()[-3000:]
    store = AlertStore(url)
    store.open()
    try:
        scored = sum(
            b.windows
            for (stream, device) in store.device_progress()
            for b in store.score_history(stream, device)
        )
    finally:
        store.close()
    assert scored > 0, "the model scored no window"
    torch_mapped = "libtorch" in maps
    assert torch_mapped == (runtime == "torch"), log.read_text()[-3000:]
    numpy_logged = re.search(r'"runtime":\s*"numpy"', log.read_text()) is not None
    assert numpy_logged == (runtime == "auto")
