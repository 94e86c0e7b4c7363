"""The sentinel command line against real databases and files."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sentinel.cli.main import main, parse_since
from sentinel.cli.models import _show_fields
from sentinel.model import ModelRegistry
from sentinel.records import Alert, AlertStatus, FeatureContribution, WriteBatch
from sentinel.store import AlertStore

REPO = Path(__file__).resolve().parents[1]


def seed_alerts(url: str) -> None:
    store = AlertStore(url)
    store.open()
    store.migrate()
    now = datetime.now(UTC).timestamp()
    alerts = [
        Alert(
            f"uid-{i}",
            "pump",
            f"pump-{i:03d}",
            status,
            now - age,
            now - age + 60,
            None if status is AlertStatus.OPEN else now - age + 60,
            9.0,
            3.0,
            (FeatureContribution("pressure", 0.8), FeatureContribution("flow", 0.2)),
            "v1",
            5,
        )
        for i, (status, age) in enumerate(
            [(AlertStatus.OPEN, 600), (AlertStatus.CLOSED, 3 * 3600), (AlertStatus.OPEN, 60)]
        )
    ]
    store.write([WriteBatch(alerts=tuple(alerts))])
    store.close()


def alert_id_of(device: str, url: str, capsys: pytest.CaptureFixture[str]) -> int:
    """The id of a device's newest alert, found the way a user would: alerts list --format json."""
    assert main(["alerts", "list", "--database", url, "--device", device, "--format", "json"]) == 0
    alert_id: int = json.loads(capsys.readouterr().out)[0]["id"]
    return alert_id


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-01-01T00:00:00", now) == datetime(2026, 1, 1, tzinfo=UTC)


def test_alerts_list_filters_and_formats(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_alerts(database_url)
    assert main(["alerts", "list", "--database", database_url]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:4] == ["ID", "STATUS", "STREAM", "DEVICE"]
    assert "pressure 80%" in table
    assert "3.0x" in table  # peak over threshold

    assert (
        main(["alerts", "list", "--database", database_url, "--since", "1h", "--format", "json"])
        == 0
    )
    recent = json.loads(capsys.readouterr().out)
    assert [a["device"] for a in recent] == ["pump-002", "pump-000"]  # newest first

    assert (
        main(
            ["alerts", "list", "--database", database_url, "--status", "closed", "--format", "csv"]
        )
        == 0
    )
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["device"] for r in rows] == ["pump-001"]
    assert json.loads(rows[0]["top_features"])[0]["feature"] == "pressure"


def test_alerts_ack(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed_alerts(database_url)
    alert_id = alert_id_of("pump-000", database_url, capsys)
    assert (
        main(
            ["alerts", "ack", str(alert_id), "--note", "valve replaced", "--database", database_url]
        )
        == 0
    )
    assert "acknowledged" in capsys.readouterr().out
    assert (
        main(
            [
                "alerts",
                "list",
                "--database",
                database_url,
                "--status",
                "acknowledged",
                "--format",
                "json",
            ]
        )
        == 0
    )
    acked = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in acked] == [alert_id]
    assert acked[0]["ack_note"] == "valve replaced"
    assert main(["alerts", "ack", "999999", "--database", database_url]) == 1
    assert "no alert with id 999999" in capsys.readouterr().err


def test_ack_of_a_closed_alert_shows_in_the_table(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closed alert stays closed when acknowledged: the table still says someone looked."""
    seed_alerts(database_url)
    closed = alert_id_of("pump-001", database_url, capsys)
    assert main(["alerts", "ack", str(closed), "--database", database_url]) == 0
    assert f"alert {closed} acknowledged (closed)" in capsys.readouterr().out
    assert main(["alerts", "list", "--database", database_url]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[str(closed)] == "closed+ack"
    assert sorted(rows.values()) == ["closed+ack", "open", "open"]


def test_commands_log_at_warning_unless_verbose(tmp_path: Path) -> None:
    """A command's output is its answer: info lines such as store_opened only with -v, and
    never on stdout (with --database no config set logging up, and they went to stdout)."""
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[[streams]]\nname = "pump"\ntopic = "p/{device}"\nfeatures = ["flow"]\n'
    )
    seed_alerts(f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}")

    def sentinel(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sentinel.cli", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    database = f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    for where in (["--config", str(config)], ["--database", database]):
        quiet = sentinel("alerts", "list", "--format", "json", *where)
        assert len(json.loads(quiet.stdout)) == 3
        assert quiet.stderr == ""
        verbose = sentinel("-v", "alerts", "list", "--format", "json", *where)
        assert len(json.loads(verbose.stdout)) == 3
        assert "store_opened" in verbose.stderr


def test_migrate_command(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--database", database_url]) == 0
    assert main(["migrate", "--database", database_url]) == 0  # idempotent
    assert "up to date" in capsys.readouterr().out


def test_train_from_csv_activates_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(1500)
    path = tmp_path / "normal.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["datetime", "a", "b", "label"])
        for i in t:
            a = np.sin(i / 20) + 0.05 * rng.standard_normal()
            when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=int(i))
            writer.writerow([when.strftime("%Y-%m-%d %H:%M:%S"), a, 2 * a, 0])
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[windows]\nlength = 16\n[cold_start]\nreadings = 64\nspan = 0\n"
        "[model]\nhidden_size = 8\nlatent_size = 2\nepochs = 3\n"
        '[[streams]]\nname = "rig"\ntopic = "r/{device}"\nfeatures = ["a", "b"]\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentinel.cli",
            "train",
            "--config",
            str(config),
            "--csv",
            str(path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    registry = ModelRegistry(tmp_path / "state" / "models")
    version = registry.active_version("rig")
    assert version is not None
    assert version in result.stdout

    # A CSV-trained version has no retraining status: its data range comes from its
    # metadata, and what it does not have is null in JSON, "-" in the table.
    assert main(["models", "list", "--config", str(config), "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["version"], row["role"], row["status"]) == (version, "active", "trained")
    assert (row["data_from"], row["data_to"], row["rows"]) == (
        "2026-01-01 00:00",
        "2026-01-01 00:24",
        1500,
    )
    assert (row["merit"], row["parent"]) == (None, None)
    assert main(["models", "list", "--config", str(config)]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "STREAM", "VERSION", "ROLE", "STATUS", "DATA_FROM", "DATA_TO", "ROWS", "MERIT", "PARENT"
    ]  # fmt: skip
    assert line.split()[4:] == ["2026-01-01", "00:00", "2026-01-01", "00:24", "1500", "-", "-"]

    bad = tmp_path / "bad.csv"
    bad.write_text("datetime;a\n2026-01-01 00:00:00;1\n")
    result = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "train", "--config", str(config), "--csv", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "missing column(s) b" in result.stderr

    # The CSV options are checked before the file is read, with what to pass instead.
    args = ["train", "--config", str(config), "--csv", str(path)]
    assert main([*args, "--separator", ",", "--decimal", ","]) == 1
    assert "the separator and the decimal mark are both ','" in capsys.readouterr().err
    assert main([*args, "--timezone", "CET+1"]) == 1
    assert "unknown time zone 'CET+1'" in capsys.readouterr().err


def test_alerts_show(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed_alerts(database_url)
    alert_id = alert_id_of("pump-001", database_url, capsys)
    assert main(["alerts", "show", str(alert_id), "--database", database_url]) == 0
    text = capsys.readouterr().out
    assert "pump / pump-001" in text
    assert "closed" in text
    assert "9 (3.0x)" in text
    assert "pressure" in text
    assert "80.0%" in text
    assert (
        main(["alerts", "show", str(alert_id), "--format", "json", "--database", database_url]) == 0
    )
    assert json.loads(capsys.readouterr().out)["uid"] == "uid-1"
    assert main(["alerts", "show", "424242", "--database", database_url]) == 1
    assert "no alert with id 424242" in capsys.readouterr().err


def _without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a Python where ``import torch`` fails, as on a box without it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes every import of torch fail
        "from sentinel.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_commands_that_need_torch_say_how_to_install_it(tmp_path: Path) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[[streams]]\nname = "rig"\ntopic = "r/{device}"\nfeatures = ["a"]\n'
    )
    data = tmp_path / "data.csv"
    data.write_text("ts,a\n1700000000,1.0\n")
    for args in (
        ["run", "--config", str(config)],
        ["train", "--config", str(config), "--csv", str(data)],
        ["replay", str(data), "--config", str(config), "--out", str(tmp_path / "out.csv")],
        ["models", "export", "v1", "--config", str(config), "--format", "onnx"],
    ):
        result = _without_torch(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)  # one line, no traceback
        assert lines[0].startswith("sentinel: PyTorch is not installed: pip install torch==")
        assert "Jetson" in lines[0]
    assert not (tmp_path / "out.csv").exists()


def test_commands_that_do_not_need_torch_work_without_it(tmp_path: Path) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text('[[streams]]\nname = "rig"\ntopic = "r/{device}"\nfeatures = ["a"]\n')
    url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    for args in (
        ["check-config", str(config)],
        ["migrate", "--database", url],
        ["alerts", "list", "--database", url],
    ):
        result = _without_torch(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "torch" not in result.stderr.lower(), (args, result.stderr)


def test_state_is_created_private_whatever_the_callers_umask(tmp_path: Path) -> None:
    """Issue #19: outside systemd (UMask=0027) state followed the caller's umask and
    sentinel.db came out 0644, readable by every user of the box."""
    state = tmp_path / "state"
    previous = os.umask(0o022)
    try:
        assert main(["migrate", "--database", f"sqlite:///{state / 'sentinel.db'}"]) == 0
        assert os.umask(0o022) == 0o022, "the caller's umask is given back"
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE((state / "sentinel.db").stat().st_mode) == 0o640


def test_commands_before_the_first_start_say_what_to_run_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's `alerts list` before the daemon ever ran met a raw SQL error ("no such
    table: alerts") and left an empty sentinel.db behind."""
    db = tmp_path / "state" / "sentinel.db"
    url = f"sqlite:///{db}"
    for args in (["alerts", "list"], ["alerts", "show", "1"], ["devices", "list"]):
        assert main([*args, "--database", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: no database at {db} yet"), err
        assert "sentinel migrate" in err
        assert "SELECT" not in err
    assert not db.exists()
    assert not db.parent.exists()


def test_a_schema_behind_this_version_asks_for_a_migration(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from alembic import command
    from alembic.config import Config

    from sentinel.store.db import MIGRATIONS_DIR

    store = AlertStore(database_url)
    store.open()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")  # what an older sentinel left
    store.close()
    assert main(["alerts", "list", "--database", database_url]) == 1
    err = capsys.readouterr().err
    assert "schema revision 0003" in err
    assert "run `sentinel migrate`" in err
    assert main(["migrate", "--database", database_url]) == 0
    assert main(["alerts", "list", "--database", database_url]) == 0


def test_models_show_names_the_features_read_but_not_scored() -> None:
    out = {
        "version": "v1",
        "stream": "oven",
        "active": True,
        "status": {},
        "meta": {
            "features": ["setpoint", "temperature"],
            "stepped_features": ["setpoint"],
            "window": 32,
        },
    }
    shown = dict(_show_fields(out, previous=False))
    assert "(read, not scored: setpoint)" in shown["features"]
    assert "counters" not in shown["features"]
    counted = {
        **out,
        "meta": {
            "features": ["setpoint", "temperature", "disk_used"],
            "stepped_features": ["setpoint", "disk_used"],
            "counter_features": ["disk_used"],
            "window": 32,
        },
    }
    shown = dict(_show_fields(counted, previous=False))
    assert "(read, not scored: setpoint, disk_used)" in shown["features"]
    assert "(counters, no set point: disk_used)" in shown["features"]
