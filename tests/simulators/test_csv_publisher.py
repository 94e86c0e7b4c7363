"""CSV replay: layout detection, clear errors, and rows arriving over MQTT with their times."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from simulators.broker import PrivateBroker
from simulators.csv_publisher import ReplayError, main, open_csv, parse_timestamp
from tests.simulators.helpers import collecting

REPO = Path(__file__).resolve().parents[2]
SKAB = Path("/work/shared/datasets/skab/valve1/0.csv")


def test_parse_timestamp() -> None:
    assert parse_timestamp("2020-03-09 10:14:33") == 1583748873.0  # naive means UTC
    assert parse_timestamp("2020-03-09T11:14:33+01:00") == 1583748873.0
    assert parse_timestamp("2020-03-09T10:14:33Z") == 1583748873.0
    assert parse_timestamp("1583748873.5") == 1583748873.5
    assert parse_timestamp("1583748873500") == 1583748873.5  # milliseconds
    assert parse_timestamp("32.0") is None  # a measurement, not a time
    assert parse_timestamp("32.0", strict=False) == 32.0
    assert parse_timestamp("") is None
    assert parse_timestamp("pump") is None


def test_layout_detection_semicolons() -> None:
    text = (
        "datetime;Current;Pressure;anomaly;changepoint\n"
        "2020-03-09 10:14:33;1.33;0.05;0.0;0.0\n"
        "2020-03-09 10:14:34;1.35;0.38;0.0;0.0\n"
    )
    source = open_csv(Path("x.csv"), io.StringIO(text), exclude=["anomaly", "changepoint"])
    assert source.sep == ";"
    assert source.timestamp_column == "datetime"
    assert source.columns == ("Current", "Pressure")
    skipped = [0]
    assert list(source.records(skipped)) == [
        (1583748873.0, {"Current": 1.33, "Pressure": 0.05}),
        (1583748874.0, {"Current": 1.35, "Pressure": 0.38}),
    ]


def test_layout_detection_epoch_not_first() -> None:
    text = "flow,ts,label\n40.5,1700000000000,a\n41.0,1700000001000,b\n,1700000002000,c\n"
    source = open_csv(Path("x.csv"), io.StringIO(text))
    assert (source.sep, source.timestamp_column, source.columns) == (",", "ts", ("flow",))
    skipped = [0]
    rows = list(source.records(skipped))
    assert rows[0] == (1700000000.0, {"flow": 40.5})
    assert rows[2] == (1700000002.0, {})  # an empty cell is left out, not zero


def test_layout_errors() -> None:
    with pytest.raises(ReplayError, match="empty"):
        open_csv(Path("e.csv"), io.StringIO(""))
    with pytest.raises(ReplayError, match="no data rows"):
        open_csv(Path("h.csv"), io.StringIO("ts,flow\n"))
    with pytest.raises(ReplayError, match="no column holds dates"):
        open_csv(Path("n.csv"), io.StringIO("a,b\n1,2\n3,4\n"))
    with pytest.raises(ReplayError, match="no column 'time'"):
        open_csv(Path("n.csv"), io.StringIO("ts,b\n1700000000,2\n"), timestamp_column="time")


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "mqtt://127.0.0.1:9"  # never reached: the file is checked first
    assert main([str(tmp_path / "missing.csv"), "--broker", url]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main([str(empty), "--broker", url]) == 2
    assert "empty" in capsys.readouterr().err
    no_time = tmp_path / "no_time.csv"
    no_time.write_text("a,b\n1,2\n")
    assert main([str(no_time), "--broker", url]) == 2
    assert "--timestamp-column" in capsys.readouterr().err


def _replay(
    broker: PrivateBroker, csv: Path, *extra: str
) -> tuple[dict[str, Any], list[mqtt.MQTTMessage]]:
    with collecting(broker) as received:
        cmd = [
            sys.executable,
            "-m",
            "simulators.csv_publisher",
            str(csv),
            "--broker",
            broker.url,
            *extra,
        ]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        received.wait_for(summary["published"], timeout=60)
    return summary, received


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as running:
        yield running


@pytest.mark.integration
def test_replay_generated_csv_paced(broker: PrivateBroker, tmp_path: Path) -> None:
    csv = tmp_path / "line-7.csv"
    rows = [f"2024-01-01T00:00:{s:02d},{40 + s / 10},{3.1 + s / 100}" for s in range(0, 40, 2)]
    csv.write_text("time,flow,pressure\n" + "\n".join(rows) + "\n")
    started = time.monotonic()
    summary, received = _replay(broker, csv, "--speed", "100")  # 38 s of data in ~0.38 s
    assert time.monotonic() - started >= 0.38
    assert summary["published"] == 20
    assert len(received) == 20
    assert {m.topic for m in received} == {"plant/line-7/pump"}
    payloads = [json.loads(m.payload) for m in received]
    assert [p["ts"] for p in payloads] == [1_704_067_200.0 + s for s in range(0, 40, 2)]
    assert payloads[3] == {"ts": 1_704_067_206.0, "flow": 40.6, "pressure": 3.16}


@pytest.mark.integration
@pytest.mark.skipif(not SKAB.exists(), reason="SKAB data set not present")
def test_replay_skab_head(broker: PrivateBroker, tmp_path: Path) -> None:
    head = tmp_path / "valve1-0.csv"
    with SKAB.open(encoding="utf-8") as src:
        head.write_text("".join(line for _, line in zip(range(50), src, strict=False)))
    summary, received = _replay(broker, head, "--speed", "0", "--device", "valve1")
    assert summary["published"] == 49
    assert summary["timestamp_column"] == "datetime"
    assert len(received) == 49
    first = json.loads(received[0].payload)
    assert received[0].topic == "plant/valve1/pump"
    assert first["ts"] == 1583748873.0  # 2020-03-09 10:14:33, naive = UTC
    assert "anomaly" not in first
    assert "changepoint" not in first
    assert first["Current"] == pytest.approx(1.3302)
    assert first["Volume Flow RateRMS"] == 32.0
