"""The retrainer under a lease (issue #24): without the lease it does not train; a lease lost
while the child trains abandons the run, so nothing is activated or installed; a scheduled
run another daemon already did this period is skipped. The lease is a fake here (its NATS
behaviour: tests/retrain/test_lease.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from structlog.testing import capture_logs

from sentinel.model import Detector, ModelRegistry
from sentinel.retrain.retrainer import Retrainer
from tests.e2e_helpers import wait_for
from tests.retrain.helpers import fill, make_config, normal

CPU = torch.device("cpu")


class FakeLease:
    """Grants the lease when ``free``; renewals succeed ``renewals`` times."""

    def __init__(
        self,
        *,
        free: bool,
        renewals: int = 1_000,
        renew_every: float = 60.0,
        last: float | None = None,
    ) -> None:
        self.free = free
        self.renewals = renewals
        self.renew_every = renew_every
        self.last = last
        self.calls: list[str] = []

    def acquire(self, stream: str) -> bool:
        self.calls.append("acquire")
        return self.free

    def renew(self, stream: str) -> bool:
        self.calls.append("renew")
        self.renewals -= 1
        return self.renewals >= 0

    def release(self, stream: str) -> None:
        self.calls.append("release")

    def last_run(self, stream: str) -> float | None:
        self.calls.append("last_run")
        return self.last

    def record_run(self, stream: str, status: str) -> None:
        self.calls.append(f"record_run {status}")


def _retrainer(tmp_path: Path, lease: FakeLease, installed: list[Detector]) -> Retrainer:
    config = make_config(tmp_path / "state")
    fill(config, normal(800, seed=4))

    def install(stream: str, detector: Detector, seeds: Any = None, shadow: bool = False) -> None:
        installed.append(detector)

    return Retrainer(
        config,
        ModelRegistry(config.models_dir),
        CPU,
        has_model=lambda stream: True,  # no cold start: only the requested run
        reservoir_count=lambda stream: 0,
        reservoir_span=lambda stream: 0.0,
        install=install,
        lease=lease,
    )


def test_a_daemon_without_the_lease_does_not_train(tmp_path: Path) -> None:
    lease = FakeLease(free=False)
    installed: list[Detector] = []
    retrainer = _retrainer(tmp_path, lease, installed)
    with capture_logs() as logs:
        retrainer.start()
        try:
            assert retrainer.request("pump", "schedule")
            wait_for(lambda: retrainer.idle.is_set(), 30, "the request to be served")
        finally:
            retrainer.stop()
    assert lease.calls == ["acquire"]  # not held: nothing to renew or release
    assert retrainer.outcomes == []
    assert installed == []
    [skipped] = [e for e in logs if e["event"] == "retrain_skipped_lease_held"]
    assert skipped["reason"] == "schedule"


def test_a_lease_lost_while_training_abandons_the_run(tmp_path: Path) -> None:
    # The first renewal, a moment into training, finds the lease taken.
    lease = FakeLease(free=True, renewals=0, renew_every=0.05)
    installed: list[Detector] = []
    retrainer = _retrainer(tmp_path, lease, installed)
    with capture_logs() as logs:
        retrainer.start()
        try:
            assert retrainer.request("pump", "manual")
            wait_for(lambda: retrainer.idle.is_set(), 60, "the run to end")
        finally:
            retrainer.stop()
    assert lease.calls == ["acquire", "renew", "release"]
    assert retrainer.outcomes == []
    assert installed == []
    assert ModelRegistry(tmp_path / "state" / "models").active_version("pump") is None
    assert [e["stream"] for e in logs if e["event"] == "retrain_abandoned_lease_lost"] == ["pump"]


def test_a_scheduled_run_another_daemon_did_this_period_is_skipped(tmp_path: Path) -> None:
    # Another daemon finished a run a minute ago; the schedule (a day) fires here now.
    lease = FakeLease(free=True, last=time.time() - 60)
    installed: list[Detector] = []
    retrainer = _retrainer(tmp_path, lease, installed)
    with capture_logs() as logs:
        retrainer.start()
        try:
            assert retrainer.request("pump", "schedule")
            wait_for(lambda: retrainer.idle.is_set(), 30, "the request to be served")
        finally:
            retrainer.stop()
    assert lease.calls == ["acquire", "last_run", "release"]
    assert retrainer.outcomes == []
    [skipped] = [e for e in logs if e["event"] == "retrain_skipped_ran_lately"]
    assert skipped["period"] == 86_400
