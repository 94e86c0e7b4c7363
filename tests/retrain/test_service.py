"""Retraining inside the daemon: restart on the active version, control socket, training
in a child process, skipped runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
import torch
from structlog.testing import capture_logs

from sentinel.cli.main import main
from sentinel.config import ColdStartConfig, SentinelConfig
from sentinel.daemon.control import CONTROL_SOCKET, send_command
from sentinel.daemon.retraining import RetrainService
from sentinel.model import Detector, ModelRegistry
from sentinel.records import Window
from sentinel.retrain import retrainer as retrainer_module
from sentinel.retrain.job import RetrainOutcome, open_reservoir, run_retrain
from sentinel.retrain.retrainer import Request, Retrainer
from simulators.broker import PrivateBroker
from tests.e2e_helpers import running_app, wait_for
from tests.retrain.helpers import (
    FEATURES,
    contaminate,
    fill,
    make_config,
    make_detector,
    normal,
    version,
    write_config,
)

CPU = torch.device("cpu")


def daemon(state: Path, broker: PrivateBroker) -> dict[str, Any]:
    config = make_config(state, control_socket=True).model_dump(mode="json", exclude_none=True)
    config["mqtt"] = {
        "host": broker.host,
        "port": broker.port,
        "protocol": broker.protocol,
        "client_id": f"retrain-{state.parent.name}"[:60],
    }
    config["logging"] = {"format": "json"}
    return config


@pytest.mark.integration
def test_restart_comes_back_on_the_active_version_and_rollback_reaches_the_daemon(
    tmp_path: Path, mqtt_broker: PrivateBroker
) -> None:
    state = tmp_path / "state"
    config = daemon(state, mqtt_broker)
    registry = ModelRegistry(state / "models")
    for day in (1, 2):
        registry.save(make_detector(version(day), seed=day))
    registry.activate("pump", version(1))
    registry.activate("pump", version(2))
    cfg = write_config(SentinelConfig.model_validate(config), tmp_path / "s.toml")

    with running_app(config) as running:
        pipeline = running.app.pipeline
        assert pipeline is not None
        assert pipeline.model_versions() == {"pump": version(2)}
        status = send_command(state / CONTROL_SOCKET, {"command": "status"})
        assert status["ok"]
        assert status["streams"]["pump"]["running_version"] == version(2)

        assert main(["models", "rollback", "--config", cfg]) == 0
        wait_for(
            lambda: pipeline.model_versions() == {"pump": version(1)}, 10, "swap after rollback"
        )
        answer = send_command(state / CONTROL_SOCKET, {"command": "reload", "stream": "nope"})
        assert not answer["ok"]
        assert "nope" in answer["error"]

        # With clean readings of a device in the reservoir, a version swapped in by hand
        # starts that device's threshold from its scores on them, as after a retraining run
        # (not from the calibration threshold for a whole warm-up).
        fill(SentinelConfig.model_validate(config), normal(400, seed=7), device="d1")
        registry.activate("pump", version(2), reason="test: by hand")
        with capture_logs() as logs:
            answer = send_command(state / CONTROL_SOCKET, {"command": "reload"})
            assert answer["ok"], answer
            wait_for(
                lambda: any(e["event"] == "thresholds_recalibrated" for e in logs),
                60,
                "thresholds seeded",
            )
        [reload] = [e for e in logs if e["event"] == "model_reload_requested"]
        assert (reload["version"], reload["seeded_devices"]) == (version(2), 1)
        [seeded] = [e for e in logs if e["event"] == "thresholds_recalibrated"]
        assert (seeded["stream"], seeded["devices"]) == ("pump", 1)

    with running_app(config) as running:  # a restart
        assert running.app.pipeline is not None
        assert running.app.pipeline.model_versions() == {"pump": version(2)}
    assert not (state / CONTROL_SOCKET).exists()


def test_a_requested_run_trains_in_a_child_process_and_is_installed(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    fill(config, normal(1500, seed=4))
    registry = ModelRegistry(config.models_dir)
    installed: list[Detector] = []
    got = threading.Event()

    def install(stream: str, detector: Detector, seeds: Any = None, shadow: bool = False) -> None:
        installed.append(detector)
        got.set()

    service = RetrainService(
        config,
        registry,
        CPU,
        has_model=lambda stream: bool(installed),
        install=install,
        active_versions=lambda: {},
    )
    with capture_logs() as logs:
        service.start()
        try:
            # No model yet and the reservoir holds cold_start.readings: the cold start
            # runs by itself, and says so.
            assert got.wait(120), "no model was installed"
            [collected] = [e for e in logs if e["event"] == "cold_start_collected"]
            assert collected["readings"] == 1500
            # A manual request for the same stream meanwhile is not queued twice.
            wait_for(lambda: service.retrainer.idle.is_set(), 60, "the cold-start run to end")
            assert service.retrainer.request("pump", "manual")
            assert not service.retrainer.request("pump", "manual")
            wait_for(lambda: service.retrainer.idle.is_set(), 120, "the manual run")
        finally:
            service.stop()
            service.close()
    first, second = service.retrainer.outcomes
    assert first.status == "accepted"
    assert first.parent is None
    # The second run was judged against the first on held-back data of the same process.
    assert second.parent == first.version
    assert "champion" in second.metrics
    assert "challenger" in second.metrics
    assert registry.status("pump", second.version or "")["status"] == second.status
    expected = second.version if second.status == "accepted" else first.version
    assert registry.active_version("pump") == expected
    assert installed[-1].version == expected


def test_a_cold_start_logs_its_progress_while_the_reservoir_fills(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")  # cold_start.readings = 600
    stored = [0]
    retrainer = Retrainer(
        config,
        ModelRegistry(config.models_dir),
        CPU,
        has_model=lambda stream: False,
        reservoir_count=lambda stream: stored[0],
        reservoir_span=lambda stream: 0.0,
        install=lambda *args, **kwargs: None,
    )

    def progress() -> list[int]:
        return [e["collected"] for e in logs if e["event"] == "cold_start_progress"]

    with capture_logs() as logs:
        retrainer.start()
        try:
            stored[0] = 60
            wait_for(lambda: progress() == [60], 60, "progress at 10%")
            stored[0] = 70  # the same 5% step: nothing new
            time.sleep(2.5)  # the thread looks about once a second
            stored[0] = 300
            wait_for(lambda: len(progress()) > 1, 60, "progress at 50%")
        finally:
            retrainer.stop()
    # One line per step reached, not per look: a cold start of an hour logs at most 20.
    assert progress() == [60, 300]
    assert all(e["target"] == 600 for e in logs if e["event"] == "cold_start_progress")
    assert not [e for e in logs if e["event"] in ("cold_start_collected", "retrain_requested")]


def cold_retrainer(
    tmp_path: Path,
    rule: ColdStartConfig,
    count: Callable[[str], int],
    span: Callable[[str], float],
    **retrain: Any,
) -> tuple[Retrainer, list[str]]:
    """A retrainer of a stream without a model whose reservoir holds ``count`` readings
    covering ``span`` seconds, under ``rule`` (and ``retrain`` settings); the reasons of
    its requests are noted in the list, never run."""
    config = make_config(tmp_path / "state", **retrain).model_copy(update={"cold_start": rule})
    retrainer = Retrainer(
        config,
        ModelRegistry(config.models_dir),
        CPU,
        has_model=lambda stream: False,
        reservoir_count=count,
        reservoir_span=span,
        install=lambda *args, **kwargs: None,
    )
    requested: list[str] = []

    def request(stream: str, reason: str) -> bool:
        requested.append(reason)
        return True

    retrainer.request = request  # type: ignore[method-assign]
    return retrainer, requested


def test_a_cold_start_also_waits_for_an_hour_of_the_streams_time(tmp_path: Path) -> None:
    stored, covered = [0], [0.0]
    retrainer, requested = cold_retrainer(
        tmp_path,
        ColdStartConfig(readings=600, span=3600),
        lambda stream: stored[0],
        lambda stream: covered[0],
    )

    def progress() -> list[float]:
        return [e["progress"] for e in logs if e["event"] == "cold_start_progress"]

    with capture_logs() as logs:
        retrainer.start()
        try:
            # The readings are there, twice over; the time they cover is not.
            stored[0], covered[0] = 1200, 1800.0
            wait_for(lambda: progress() == [0.5], 60, "progress at 50%, by the span")
            covered[0] = 3600.0
            wait_for(lambda: requested == ["cold_start"], 60, "the cold start's request")
        finally:
            retrainer.stop()
    [line] = [e for e in logs if e["event"] == "cold_start_progress"]
    assert (line["collected"], line["target"], line["covered"], line["span"]) == (
        1200,
        600,
        1800.0,
        3600,
    )
    [collected] = [e for e in logs if e["event"] == "cold_start_collected"]
    assert collected["readings"] == 1200


def test_a_cold_start_trains_at_max_readings_whatever_span_they_cover(tmp_path: Path) -> None:
    stored = [4999]
    retrainer, requested = cold_retrainer(
        tmp_path,
        ColdStartConfig(readings=600, span=3600, max_readings=5000),
        lambda stream: stored[0],
        lambda stream: 60.0,  # a large fleet's first minute
    )
    with capture_logs() as logs:
        retrainer.start()
        try:
            wait_for(lambda: any(e["event"] == "cold_start_progress" for e in logs), 60, "a look")
            assert requested == []
            stored[0] = 5000
            wait_for(lambda: requested == ["cold_start"], 60, "the cold start's request")
        finally:
            retrainer.stop()


def test_a_cold_start_on_a_reservoir_smaller_than_max_readings_trains_once_it_is_full(
    tmp_path: Path,
) -> None:
    # The reservoir prunes to its 2,000 rows, which a fleet fills in its first minute: waiting
    # for 5,000 (or for the hour, which 2,000 rows of it never cover) waited for ever.
    retrainer, requested = cold_retrainer(
        tmp_path,
        ColdStartConfig(readings=600, span=3600, max_readings=5000),
        lambda stream: 2000,
        lambda stream: 60.0,
        reservoir_rows=2000,
    )
    with capture_logs() as logs:
        retrainer.start()
        try:
            wait_for(lambda: requested == ["cold_start"], 60, "the cold start's request")
        finally:
            retrainer.stop()
    [short] = [e for e in logs if e["event"] == "cold_start_span_short"]
    assert "learns 60 s of the stream's time" in short["hint"]
    assert "cold_start.max_readings (2000)" in short["hint"]


def test_a_first_run_trains_on_a_full_reservoir_smaller_than_cold_start_readings(
    tmp_path: Path,
) -> None:
    # 500 rows is all the reservoir keeps; the cold start's 600 were never there to be had.
    config = make_config(tmp_path / "state", reservoir_rows=500)
    fill(config, normal(500, seed=4))
    outcome = run_retrain(config, "pump", reason="cold start", device=CPU, cold_start=True)
    assert outcome.status == "accepted", outcome.reason


def test_a_cold_start_waits_for_no_more_of_the_stream_than_the_reservoir_keeps(
    tmp_path: Path,
) -> None:
    # The reservoir drops readings older than half an hour: its readings never cover the hour.
    covered = [1500.0]
    retrainer, requested = cold_retrainer(
        tmp_path,
        ColdStartConfig(readings=600, span=3600, max_readings=50_000),
        lambda stream: 1000,
        lambda stream: covered[0],
        reservoir_age=1800.0,
    )
    with capture_logs() as logs:
        retrainer.start()
        try:
            wait_for(lambda: any(e["event"] == "cold_start_progress" for e in logs), 60, "a look")
            assert requested == []  # 1,500 s of the 1,620 (0.9 of what the reservoir keeps)
            covered[0] = 1620.0
            wait_for(lambda: requested == ["cold_start"], 60, "the cold start's request")
        finally:
            retrainer.stop()
    [line] = [e for e in logs if e["event"] == "cold_start_progress"]
    assert line["span"] == 1620.0


class SlowColdStart:
    """A retrainer whose training runs are fakes that take five minutes of a fake clock,
    beside a pipeline whose worker never gets to apply a swap (``has_model`` stays False).

    Its config has a second stream, ``idle``, that never collects enough: each look the
    retrainer's thread takes at the streams asks its count once, so the test can wait for
    whole looks instead of sleeping.
    """

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: Literal["accepted", "failed"]
    ) -> None:
        data = make_config(tmp_path / "state").model_dump(mode="json", exclude_none=True)
        data["streams"].append({"name": "idle", "topic": "i/{device}", "features": FEATURES})
        self.config = SentinelConfig.model_validate(data)
        self.now = 1000.0
        self.runs: list[Request] = []
        self.installed: list[str] = []
        self.looks = 0
        monkeypatch.setattr(retrainer_module, "time", SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(Retrainer, "_in_child", self._train)
        self.status = status
        self.retrainer = Retrainer(
            self.config,
            ModelRegistry(self.config.models_dir),
            CPU,
            has_model=lambda stream: False,
            reservoir_count=self._count,
            reservoir_span=lambda stream: 0.0,
            install=lambda stream, *args, **kwargs: self.installed.append(stream),
        )

    def _count(self, stream: str) -> int:
        if stream == "idle":
            self.looks += 1
            return 0
        return self.config.cold_start.readings

    def _train(self, request: Request, cold: bool) -> RetrainOutcome:
        self.runs.append(request)
        self.now += 300.0  # longer than the retry guard: training always is, on a Pi
        if self.status == "failed":
            return RetrainOutcome(request.stream, "failed", "fake")
        v = version(len(self.runs))
        ModelRegistry(self.config.models_dir).save(make_detector(v))
        return RetrainOutcome(request.stream, "accepted", "fake", v)

    def wait_for_looks(self, n: int) -> None:
        """Until the thread has looked at the streams ``n`` more times from now."""
        target = self.looks + n
        wait_for(lambda: self.looks >= target, 30, f"{n} looks at the streams")


def test_a_cold_start_trains_once_though_the_swap_is_not_applied_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowColdStart(tmp_path, monkeypatch, "accepted")
    slow.retrainer.start()
    try:
        wait_for(lambda: bool(slow.installed), 60, "the first model handed over")
        # The pipeline's worker has not swapped it in, and the run took longer than the
        # retry guard: the stream has a model all the same, and no second run starts.
        slow.wait_for_looks(2)
    finally:
        slow.retrainer.stop()
    assert [r.reason for r in slow.runs] == ["cold_start"]
    assert slow.installed == ["pump"]


def test_a_failed_cold_start_is_retried_a_guard_interval_after_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowColdStart(tmp_path, monkeypatch, "failed")
    slow.retrainer.start()
    try:
        wait_for(lambda: bool(slow.runs), 60, "the first cold-start run")
        slow.wait_for_looks(2)
        assert len(slow.runs) == 1  # not at once, though the run outlasted the guard
        slow.now += 61.0
        wait_for(lambda: len(slow.runs) > 1, 60, "the retry")
    finally:
        slow.retrainer.stop()
    assert not slow.installed


def test_a_run_with_too_little_clean_data_is_skipped_with_the_reason(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state")
    data = contaminate(normal(1000), fraction=1.0)
    fill(config, data)
    reservoir = open_reservoir(config, "pump")
    flagged = [
        Window("pump", "d1", float(s), float(s + 15), data[s : s + 16]) for s in range(0, 900, 8)
    ]
    reservoir.add([], flagged)
    reservoir.close()

    outcome = run_retrain(config, "pump", reason="manual", device=CPU)

    assert outcome.status == "skipped"
    assert "too little clean data" in outcome.reason
    assert "need 400" in outcome.reason
    assert ModelRegistry(config.models_dir).versions("pump") == []
