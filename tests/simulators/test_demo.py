"""The demo's live view follows the daemon's JSON log by event name: the names it follows
must still be logged, and a first run must show collection, training and the new model
(once the cold start moved into the retrainer, the view showed neither the collection nor
the training's end, and called the fresh model a saved one)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel.config import WindowConfig
from sentinel.store import AlertStore
from simulators.demo import _fleet_argv, _View
from simulators.fleet import _parse_args as fleet_args
from tests.e2e_helpers import subprocess_env, wait_for
from tests.ops_helpers import install_untrained_model, metrics, sample

ROOT = Path(__file__).resolve().parents[2]


def test_every_event_the_view_follows_is_logged_by_the_daemon() -> None:
    view = (ROOT / "simulators" / "demo.py").read_text(encoding="utf-8")
    followed = set(re.findall(r'name == "([a-z_]+)"', view))
    assert "cold_start_progress" in followed
    daemon = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "sentinel").rglob("*.py"))
    missing = sorted(e for e in followed if f'"{e}"' not in daemon)
    assert not missing, f"the demo follows events the daemon never logs: {missing}"


def test_a_first_run_shows_collection_training_and_the_new_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = _View(tmp_path / "truth.jsonl")
    events: list[dict[str, Any]] = [
        {"event": "cold_start_progress", "collected": 500, "target": 1000},
        {"event": "cold_start_collected", "readings": 1000},
        {"event": "retrain_requested", "reason": "cold_start"},
        {"event": "training_progress", "stream": "pump", "epoch": 3, "epochs": 30},
        {"event": "model_loaded", "version": "v1"},  # the retrainer loads what it trained
        {
            "event": "retrain_finished",
            "status": "accepted",
            "version": "v1",
            "installed": True,
            "seconds": 12.5,
        },
        {"event": "model_loaded", "version": "v1"},  # a later load, e.g. after a restart
    ]
    for event in events:
        view.handle(event)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "collected 1000 readings; training the first model" in text
    # the bar names the stream's model: the default detector is a forecaster, and the bar
    # once called every model an autoencoder
    assert "training the pump model" in text
    assert "model v1 trained in 12.5 s; scoring" in text
    assert text.count("loaded saved model v1") == 1


def test_a_skipped_run_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = _View(tmp_path / "truth.jsonl")
    view.handle({"event": "retrain_requested", "reason": "cold_start"})
    view.handle({"event": "retrain_skipped", "reason": "too little clean data"})
    view.handle(
        {
            "event": "retrain_finished",
            "status": "skipped",
            "version": None,
            "installed": False,
            "seconds": 0.4,
        }
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "training skipped: too little clean data" in out


def test_bars_fit_the_width_and_start_without_a_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first progress event arrives with readings already collected: counted as done in
    no time they made 75,297,743 reading/s, and a bar wider than 80 columns wrapped, each
    redraw leaving a line behind (stderr piped, or a narrow terminal)."""
    monkeypatch.setenv("COLUMNS", "80")
    view = _View(tmp_path / "truth.jsonl")
    view.handle({"event": "cold_start_progress", "collected": 196, "target": 2640})
    view.handle({"event": "cold_start_progress", "collected": 278, "target": 2640})
    drawn = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip()]
    assert any("196/2640" in line for line in drawn)
    assert all(len(line) < 80 for line in drawn), drawn
    # A rate is drawn once time has passed (tqdm's mininterval, 0.1 s): never more than the
    # 82 readings between the events over that time, however fast or slow this machine is.
    rates = [float(r) for r in re.findall(r"([0-9.]+)reading/s", "".join(drawn))]
    assert all(rate <= 820 for rate in rates), drawn
    view._close_bar()


def test_rejected_input_is_on_screen_and_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rerun whose every reading was refused as out of order used to show nothing at all."""
    view = _View(tmp_path / "truth.jsonl")
    view.handle({"event": "cold_start_progress", "collected": 10, "target": 100})
    view.handle(
        {
            "event": "input_rejected",
            "level": "warning",
            "reason": "out_of_order",
            "topic": "plant/pump-000/pump",
            "detail": "ts 1700000000.0 not after last 1700003600.0",
            "total": 480,
        }
    )
    out = capsys.readouterr().out
    assert "rejected\x1b[0m 480 readings so far as out_of_order" in out
    assert "plant/pump-000/pump: ts 1700000000.0 not after last 1700003600.0" in out
    assert view.summary().endswith("the daemon rejected at least 480: 480 out_of_order")


def test_a_bar_cut_short_stays_where_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during training drew the bar at 30/30 epochs, as if it had finished."""
    view = _View(tmp_path / "truth.jsonl")
    view.handle({"event": "training_progress", "epoch": 14, "epochs": 30})
    view._close_bar()
    err = capsys.readouterr().err
    assert "14/30" in err
    assert "30/30" not in err


def test_the_simulator_gets_the_demos_day_and_a_clock_that_ends_now(tmp_path: Path) -> None:
    """The cold start is sized for 1.1 compressed days, but the simulator was never told the
    day's length and ran 86,400 s days; and the faults began before the model scored."""
    args = argparse.Namespace(
        devices=2, rate=40.0, duration=3600.0, day_length=1200.0, cold_start=2640, seed=7
    )
    url = "mqtt://127.0.0.1:1883"
    first, rerun = (
        fleet_args(_fleet_argv(args, url, "5", model, tmp_path / "t", tmp_path / "s")[3:])
        for model in (False, True)
    )
    assert first.day_length == rerun.day_length == args.day_length
    # Faults after the collection and the training; with a saved model, soon.
    assert first.warmup > args.cold_start / args.devices > rerun.warmup
    last = first.start + (first.duration * first.rate - 1) * first.step
    assert last <= time.time()  # the last reading is due before now, never ahead of it


class _Demo:
    """``python -m simulators.demo`` with its stdout on a pipe that is read as it runs, as
    ``make demo | tee demo.log`` would; its bars go to a file."""

    def __init__(self, state: Path, tmp_path: Path, name: str) -> None:
        env = subprocess_env()
        env.pop("PYTHONUNBUFFERED", None)  # a user's shell has none: a pipe gets a buffer
        self.state = state
        self.lines: list[str] = []
        demo = ["-m", "simulators.demo", "--state", str(state), "--devices", "2", "--rate", "20"]
        self.proc = subprocess.Popen(
            [sys.executable, *demo],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"{name}.stderr").open("wb"),
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for(self, text: str) -> None:
        wait_for(lambda: self.shows(text) or self.proc.poll() is not None, 240, repr(text))
        assert self.shows(text), "\n".join(self.lines)

    def metrics_after(self, messages: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The daemon's /metrics once it has taken in ``messages``; the port (the demo asks
        for a free one) from its log."""
        found: list[int] = []

        def listening() -> bool:
            for line in (self.state / "sentinel.log").read_text().splitlines():
                if '"health_listening"' in line:
                    found.append(json.loads(line)["port"])
            return bool(found)

        wait_for(listening, 240, "the daemon's health_listening")
        wait_for(
            lambda: sample(metrics(found[0]), "sentinel_messages_total") >= messages,
            240,
            f"{messages} readings taken in",
        )
        return metrics(found[0])

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGINT)
        self.wait_for("stopping")
        self.proc.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C during the clean-up
        assert self.proc.wait(timeout=240) == 0
        self._reader.join(timeout=60)
        return self.lines


@pytest.mark.integration
@pytest.mark.slow
def test_every_run_is_accepted_and_ctrl_c_reports_through_a_pipe(tmp_path: Path) -> None:
    """A second run used to be blind for as long as the first had run: the first's
    simulated clock had raced ahead of the wall clock, and every reading of the second was
    rejected as out of order. Now the clock ends at the wall clock, each run starts over from
    the saved model, and a piped stdout gets each line as it comes and the summary."""
    state = tmp_path / "demo-state"
    version = install_untrained_model(state, window=WindowConfig().length)
    for run in ("first", "second"):
        demo = _Demo(state, tmp_path, run)
        demo.wait_for(f"loaded saved model {version}")
        demo.wait_for("Ctrl-C stops the demo.")
        scraped = demo.metrics_after(200)
        dropped = {k: v for k, v in scraped.items() if k[0] == "sentinel_readings_dropped_total"}
        assert sum(dropped.values()) == 0, (run, dropped)
        assert sample(scraped, "sentinel_readings_total") >= 200
        store = AlertStore(f"sqlite:///{state / 'sentinel.db'}")
        store.open()
        try:
            progress = store.device_progress().values()
        finally:
            store.close()
        assert progress
        assert all(p.last_ts <= time.time() for p in progress), run  # never ahead of now
        lines = demo.stop()
        assert any(line.startswith("simulator: published") for line in lines), lines
        assert any(line.startswith("web UI: http://127.0.0.1:") for line in lines), lines
        assert any("injected anomalies caught" in line for line in lines), lines
    assert (state / "models" / "pump" / version).is_dir()
