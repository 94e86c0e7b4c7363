"""Two daemons on one shared registry (issue #24), against a real private nats-server: a
version activated elsewhere -- by a client, or by ``sentinel models activate`` on another
host -- is swapped in by both, so both score the stream with the same version (in-process
daemons, and two real ``sentinel run`` processes); a cold start trains on one daemon only
and reaches the other."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from sentinel.cli.main import main
from sentinel.config import NatsConfig, RegistryConfig
from sentinel.daemon.control import CONTROL_SOCKET, send_command
from sentinel.model import (
    Detector,
    LstmAeDetector,
    LstmAeMeta,
    LstmAutoencoder,
    ModelRegistry,
)
from sentinel.model.nats_registry import NatsRegistry
from simulators.nats_server import PrivateNats
from tests.e2e_helpers import (
    WINDOW,
    RunningApp,
    running_app,
    start_daemon,
    wait_for,
    write_toml,
)
from tests.model.helpers import V1, V2, make_detector
from tests.nats_helpers import FEATURES, device_names, nats_daemon_config, publish

pytestmark = pytest.mark.integration

REGISTRY = {"backend": "nats", "lease_ttl": 2.0, "timeout": 5.0}


def _pump_detector(version: str, seed: int) -> Detector:
    """An untrained LSTM-AE that fits the daemons' pump stream (features, window)."""
    template = make_detector(version, seed=seed)
    assert isinstance(template.meta, LstmAeMeta)
    meta = dataclasses.replace(template.meta, features=tuple(FEATURES), window=WINDOW)
    torch.manual_seed(seed)
    return LstmAeDetector(meta, LstmAutoencoder(2, 4, 2, 1), torch.device("cpu"))


def _daemon(tmp_path: Path, server: PrivateNats, name: str, **sections: Any) -> dict[str, Any]:
    # Each daemon its own partitions (two owners of one consumer would fight over it).
    partitions = [0, 1] if name == "a" else [2, 3]
    sections = {"registry": REGISTRY, **sections}
    return nats_daemon_config(
        tmp_path / name,
        server,
        nats={"consume": partitions, "name": f"sentinel-{name}"},
        **sections,
    )


def _wait_runs(running: RunningApp, version: str) -> None:
    def runs() -> bool:
        pipeline = running.app.pipeline
        return pipeline is not None and pipeline.model_versions().get("pump") == version

    wait_for(runs, 60, f"{version} swapped in")


def test_an_activation_anywhere_reaches_both_daemons(
    private_nats: PrivateNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_config = tmp_path / "cli.toml"
    write_toml(cli_config, _daemon(tmp_path, private_nats, "cli"))
    with ExitStack() as stack:
        # One with retraining (the swap goes through Retrainer.reload, thresholds seeded
        # from its reservoir), one without (loaded and installed directly).
        a = stack.enter_context(
            running_app(_daemon(tmp_path, private_nats, "a", retrain={"enabled": True}))
        )
        b = stack.enter_context(running_app(_daemon(tmp_path, private_nats, "b")))
        assert a.app.follower is not None
        assert b.app.follower is not None
        for running in (a, b):
            assert running.app.pipeline is not None
            assert running.app.pipeline.model_versions() == {"pump": None}

        # A client of the registry (a training box) publishes and activates V1.
        nats = NatsConfig(servers=[private_nats.url], name="trainer")
        trainer = NatsRegistry(RegistryConfig(timeout=5.0), nats, tmp_path / "trainer")
        assert trainer.start()
        try:
            for version, seed in ((V1, 1), (V2, 2)):
                trainer.save(_pump_detector(version, seed))
            trainer.activate("pump", V1)
        finally:
            trainer.stop()
        for running in (a, b):
            _wait_runs(running, V1)

        # `sentinel models activate` on a third host switches both.
        assert main(["models", "activate", V2, "--config", str(cli_config)]) == 0
        assert f"{V2} is active" in capsys.readouterr().out
        for running in (a, b):
            _wait_runs(running, V2)
        assert a.app.follower.adopted == 2
        assert b.app.follower.adopted == 2

    # Each daemon's cache now points at V2: a start without NATS comes back on it.
    for name in ("a", "b"):
        cache = ModelRegistry(tmp_path / name / "models")
        assert cache.active_version("pump") == V2
        assert (cache.root / "pump" / V2).is_dir()


@pytest.mark.slow
def test_a_cold_start_trains_on_one_daemon_and_reaches_the_other(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """Both daemons collect their own devices' readings; one takes the lease and trains,
    the other swaps its version in: one training run for the stream, one version."""
    fast = {
        # A TTL well above a loaded box's pauses: this test is about the hand-over.
        "registry": {**REGISTRY, "lease_ttl": 10.0},
        "retrain": {"enabled": True, "min_rows": 200},
        "cold_start": {"readings": 300, "span": 0},
        "model": {"epochs": 2, "hidden_size": 8, "latent_size": 4},
    }
    with ExitStack() as stack:
        a = stack.enter_context(running_app(_daemon(tmp_path, private_nats, "a", **fast)))
        b = stack.enter_context(running_app(_daemon(tmp_path, private_nats, "b", **fast)))
        publish(private_nats, device_names(8), range(250))

        def same_model() -> bool:
            versions = {r.app.pipeline.model_versions()["pump"] for r in (a, b) if r.app.pipeline}
            return len(versions) == 1 and None not in versions

        wait_for(same_model, 240, "both daemons to run one model")
        assert a.app.retrain is not None
        assert b.app.retrain is not None
        runs = [*a.app.retrain.retrainer.outcomes, *b.app.retrain.retrainer.outcomes]
        assert [o.status for o in runs] == ["accepted"]
        assert a.app.pipeline is not None
        [version] = set(a.app.pipeline.model_versions().values())
        assert runs[0].version == version
        # The daemon that did not train adopted the version through the registry.
        adopted = [r.app.follower.adopted for r in (a, b) if r.app.follower is not None]
        assert sorted(adopted) == [0, 1]


def _wait_logged(log: Path, event: bytes) -> None:
    wait_for(lambda: event in log.read_bytes(), 60, f"{event!r} in {log.name}")


def _wait_running(state: Path, version: str) -> None:
    wait_for(lambda: _running_version(state) == version, 60, f"{state.name} to run {version}")


def _running_version(state: Path) -> str | None:
    try:
        answer = send_command(state / CONTROL_SOCKET, {"command": "status"})
    except ConnectionError:
        return None
    version = answer.get("streams", {}).get("pump", {}).get("running_version")
    return version if isinstance(version, str) else None


@pytest.mark.slow
def test_models_activate_reaches_two_sentinel_run_processes(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """The same with two real ``sentinel run`` processes, asked through their control
    sockets which version they score with."""
    cli_config = write_toml(tmp_path / "cli.toml", _daemon(tmp_path, private_nats, "cli"))
    nats = NatsConfig(servers=[private_nats.url], name="trainer")
    trainer = NatsRegistry(RegistryConfig(timeout=5.0), nats, tmp_path / "trainer")
    assert trainer.start()
    try:
        for version, seed in ((V1, 1), (V2, 2)):
            trainer.save(_pump_detector(version, seed))  # uploaded, neither active yet
    finally:
        trainer.stop()

    daemons: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    try:
        for name, log in logs.items():
            config = _daemon(tmp_path, private_nats, name, retrain={"enabled": True})
            daemons[name] = start_daemon(write_toml(tmp_path / f"{name}.toml", config), log)
        for log in logs.values():
            _wait_logged(log, b"registry_watching")
            _wait_logged(log, b"nats_subscribed")

        for version in (V1, V2):
            assert main(["models", "activate", version, "--config", str(cli_config)]) == 0
            for name in logs:
                _wait_running(tmp_path / name, version)
    finally:
        for process in daemons.values():
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(60) for process in daemons.values()]
    assert codes == [0, 0]
    for log in logs.values():
        assert log.read_bytes().count(b'"model_adopted"') == 2
