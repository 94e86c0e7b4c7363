"""The retraining schedule survives restarts (issue #19): each stream's next run is kept in
the state directory, so a box that restarts more often than ``every`` still retrains."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from structlog.testing import capture_logs

from sentinel.config import RetrainConfig
from sentinel.daemon.retraining import RetrainService
from sentinel.model import ModelRegistry
from sentinel.retrain.scheduler import SCHEDULE_FILE, RetrainScheduler
from tests.e2e_helpers import wait_for
from tests.retrain.helpers import make_config

DAY = timedelta(days=1)
# Far enough ahead that APScheduler, which fires on the real clock, never fires in a test.
T0 = datetime(2100, 1, 1, tzinfo=UTC)


@contextmanager
def scheduler(
    path: Path,
    now: datetime | None = None,
    request: Callable[[str, str], object] = lambda stream, reason: None,
    **retrain: Any,
) -> Iterator[RetrainScheduler]:
    config = RetrainConfig.model_validate({"every": DAY.total_seconds(), **retrain})
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    running = RetrainScheduler(config, ["pump", "fan"], request, path, now=clock)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def next_runs(running: RetrainScheduler) -> dict[str, datetime | None]:
    return {
        s: None if (t := running.next_run(s)) is None else datetime.fromisoformat(t)
        for s in ("pump", "fan")
    }


def test_a_restarted_daemon_keeps_the_countdown(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", every=3600)

    def next_run() -> str | None:
        service = RetrainService(
            config,
            ModelRegistry(config.models_dir),
            torch.device("cpu"),
            has_model=lambda stream: True,
            install=lambda *args, **kwargs: None,
            active_versions=lambda: {},
        )
        service.start()
        try:
            return service.scheduler.next_run("pump")
        finally:
            service.stop()
            service.close()

    first = next_run()
    assert first is not None
    assert next_run() == first  # not the second start's own time + every


def test_a_later_start_resumes_at_the_saved_time(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    with scheduler(path, now=T0) as first:
        assert next_runs(first) == {"pump": T0 + DAY, "fan": T0 + DAY}
    saved = json.loads(path.read_text())
    assert saved["next_run"] == {"pump": (T0 + DAY).isoformat(), "fan": (T0 + DAY).isoformat()}

    with scheduler(path, now=T0 + timedelta(hours=20)) as second:
        assert next_runs(second) == {"pump": T0 + DAY, "fan": T0 + DAY}


def test_a_run_missed_while_down_runs_once_at_start(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    with scheduler(path, now=T0):
        pass
    later = T0 + 5 * DAY  # five runs missed
    with capture_logs() as logs, scheduler(path, now=later) as running:
        assert next_runs(running) == {"pump": later, "fan": later}
    missed = [e for e in logs if e["event"] == "retrain_missed_while_down"]
    assert sorted(e["stream"] for e in missed) == ["fan", "pump"]
    assert all(e["due"] == (T0 + DAY).isoformat() for e in missed)


def test_the_missed_run_fires_once_and_the_countdown_starts_from_it(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    hour = timedelta(hours=1)
    with scheduler(path, now=T0, every=hour.total_seconds()):
        pass
    # The daemon was down for days past the saved time: some 70 hourly runs missed.
    saved = json.loads(path.read_text())
    due = (datetime.now(UTC) - 3 * DAY).isoformat()
    path.write_text(json.dumps(saved | {"next_run": {s: due for s in saved["next_run"]}}))

    def next_saved() -> list[datetime]:
        runs = json.loads(path.read_text())["next_run"]
        return [datetime.fromisoformat(t) for t in runs.values()]

    requests: list[tuple[str, str]] = []
    started = datetime.now(UTC)
    with scheduler(path, request=lambda *r: requests.append(r), every=hour.total_seconds()):
        wait_for(lambda: len(requests) == 2, 60, "the missed runs")
        wait_for(lambda: all(t > started for t in next_saved()), 60, "the new times saved")
    assert sorted(requests) == [("fan", "schedule"), ("pump", "schedule")]  # once each
    assert all(started + hour <= t < datetime.now(UTC) + hour for t in next_saved())


def test_a_changed_schedule_starts_a_new_countdown(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    with scheduler(path, now=T0):
        pass
    start = T0 + timedelta(hours=1)
    with scheduler(path, now=start, every=2 * DAY.total_seconds()) as running:
        assert next_runs(running) == {"pump": start + 2 * DAY, "fan": start + 2 * DAY}
    with scheduler(path, now=start, cron="0 3 * * *") as running:
        three = T0 + timedelta(hours=3)
        assert next_runs(running) == {"pump": three, "fan": three}


def test_an_unreadable_schedule_file_is_reported_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / SCHEDULE_FILE
    path.write_text("{not json")
    with capture_logs() as logs, scheduler(path, now=T0) as running:
        assert next_runs(running) == {"pump": T0 + DAY, "fan": T0 + DAY}
    [event] = [e for e in logs if e["event"] == "retrain_schedule_unreadable"]
    assert event["path"] == str(path)
    assert json.loads(path.read_text())["next_run"]["pump"] == (T0 + DAY).isoformat()
