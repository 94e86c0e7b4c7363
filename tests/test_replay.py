"""sentinel replay: the live pipeline's code over a recorded CSV, driven by its timestamps."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sentinel.cli.main import main

pytestmark = pytest.mark.slow

CONFIG = """
[windows]
length = 16
hop = 1
[cold_start]
readings = 400
[model]
# The autoencoder: this fault (pressure off its relation to flow for 100 rows) is flagged
# through its whole length only by a reconstruction; the default forecaster sees its onset
# and its end (test_the_default_forecaster_alerts_at_the_faults_onset).
detector = "lstm_ae"
hidden_size = 16
latent_size = 4
epochs = 15
[[streams]]
name = "rig"
topic = "rig/{device}"
features = ["flow", "pressure"]
"""


def recording(path: Path, rows: int = 1200, fault: tuple[int, int] = (900, 1000)) -> Path:
    """Two coupled sensors; pressure drifts away from flow inside ``fault`` (labelled)."""
    rng = np.random.default_rng(1)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["datetime", "flow", "pressure", "anomaly"])
        for i in range(rows):
            flow = 10 + 2 * np.sin(i / 8) + 0.05 * rng.standard_normal()  # period ~50 rows
            pressure = 0.3 * flow + 0.02 * rng.standard_normal()
            inside = fault[0] <= i < fault[1]
            if inside:
                pressure += 1.5
            when = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([when, f"{flow:.4f}", f"{pressure:.4f}", "1.0" if inside else "0.0"])
    return path


def test_replay_scores_every_row_and_finds_the_labelled_fault(tmp_path: Path) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)
    source = recording(tmp_path / "rig.csv")
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "replay",
                str(source),
                "--config",
                str(config),
                "--out",
                str(out),
                "--label-columns",
                "anomaly",
            ]
        )
        == 0
    )
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1200
    assert list(rows[0]) == [
        "timestamp",
        "flow",
        "pressure",
        "score",
        "threshold",
        "is_anomaly",
        "check",
        "alert_id",
        "anomaly",
    ]
    assert rows[0]["timestamp"] == "2026-03-01T00:00:00Z"
    assert all(r["score"] == "" for r in rows[:400]), "training rows are not scored"
    assert all(r["score"] != "" for r in rows[420:]), "every later row carries a score"
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert all(r["check"] for r in rows if r["is_anomaly"] == "1"), "every verdict explained"
    assert not any(r["check"] for r in rows if r["is_anomaly"] == "0")
    inside = [i for i in flagged if 900 <= i < 1000 + 16]
    assert len(inside) >= 50, f"the fault was not found: flagged rows {flagged[:20]}..."
    assert len(flagged) - len(inside) <= 30, "too many rows flagged outside the fault"
    assert any(r["alert_id"] for r in rows[900:1016]), "the fault raised an alert"
    assert rows[950]["anomaly"] == "1.0"  # labels carried untouched


def test_the_default_forecaster_alerts_at_the_faults_onset(tmp_path: Path) -> None:
    """The same recording with the default detector: an alert opens within a window of the
    fault's first row, and the normal rows before it stay quiet."""
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n' + CONFIG.replace('detector = "lstm_ae"\n', "")
    )
    source = recording(tmp_path / "rig.csv")
    out = tmp_path / "scores.csv"
    assert main(["replay", str(source), "--config", str(config), "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert any(r["alert_id"] for r in rows[900:916]), "no alert at the fault's onset"
    assert not any(r["alert_id"] for r in rows[400:900]), "an alert before the fault"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("datetime;flow;pressure\n", "no data rows"),
        ("flow;pressure\n1;2\n", "no timestamp column"),
        ("datetime;flow\n2026-01-01 00:00:00;1\n", "missing column"),
        ("datetime;flow;pressure\nyesterday;1;2\n", "unparsable time"),
        ("1700000000;1.5;2\n1700000001;1.6;2\n", "the file has: value1, value2, value3"),
    ],
)
def test_replay_refuses_bad_input_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)
    source = tmp_path / "bad.csv"
    source.write_text(content)
    assert (
        main(["replay", str(source), "--config", str(config), "--out", str(tmp_path / "o.csv")])
        == 1
    )
    assert message in capsys.readouterr().err


def test_a_european_export_replays_like_the_iso_file(tmp_path: Path) -> None:
    """Day-first times (detected), ';' and a decimal comma: the same scores, times in UTC."""
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)
    iso = recording(tmp_path / "rig.csv", rows=700, fault=(600, 650))
    european = tmp_path / "rig-export.csv"
    with iso.open() as src, european.open("w") as dst:
        dst.write(src.readline().replace("datetime", "Zeitstempel"))
        for line in src:
            when, *rest = line.rstrip("\n").split(";")
            day = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").strftime("%d.%m.%Y %H:%M:%S")
            dst.write(";".join([day, *(cell.replace(".", ",") for cell in rest)]) + "\n")

    def scores(source: Path, *extra: str) -> list[dict[str, str]]:
        out = tmp_path / f"{source.stem}-scores.csv"
        args = ["replay", str(source), "--config", str(config), "--out", str(out)]
        assert main([*args, "--train-rows", "400", *extra]) == 0
        with out.open() as handle:
            return list(csv.DictReader(handle))

    plain = scores(iso)
    local = scores(
        european,
        "--timestamp-column",
        "Zeitstempel",
        "--decimal",
        ",",
        "--timezone",
        "Europe/Berlin",
    )
    assert [r["score"] for r in local] == [r["score"] for r in plain]
    assert [r["is_anomaly"] for r in local] == [r["is_anomaly"] for r in plain]
    assert sum(r["is_anomaly"] == "1" for r in plain) > 0
    # Berlin is an hour ahead of UTC in March: the file's 00:00 is 23:00 the day before.
    assert plain[0]["timestamp"] == "2026-03-01T00:00:00Z"
    assert local[0]["timestamp"] == "2026-02-28T23:00:00Z"


def test_replay_retrains_by_default_when_the_daemon_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[retrain] on (the default): replay runs its schedule in the file's time, as `run`."""
    config = tmp_path / "sentinel.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        + CONFIG
        # 800 scored rows of 1 s: 2 runs, each with 300 new readings
        + "[retrain]\nevery = 300\nmin_rows = 256\nmin_new_rows = 200\n"
    )
    source = recording(tmp_path / "rig.csv")
    args = ["replay", str(source), "--config", str(config), "--out", str(tmp_path / "o.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "retraining: 2 scheduled runs in the data's time" in out
    assert ", 0 skipped (" in out
    # At 1,000 new readings a run (the default), neither run has enough: both skip.
    config.write_text(config.read_text().replace("min_new_rows = 200", "min_new_rows = 1000"))
    assert main(args) == 0
    assert "2 scheduled runs in the data's time, 0 promoted, 2 skipped" in capsys.readouterr().out
    assert main([*args, "--no-retrain"]) == 0
    assert "retraining" not in capsys.readouterr().out
    config.write_text(config.read_text().replace("[retrain]\n", "[retrain]\nenabled = false\n"))
    assert main(args) == 0
    assert "retraining" not in capsys.readouterr().out


@pytest.mark.parametrize(("detector", "saved"), [("zscore", True), ("hst", False)])
def test_replay_retrains_a_baseline_as_the_daemon_would_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str, saved: bool
) -> None:
    """Retraining saves every version: a detector that can be saved retrains as the LSTM-AE
    does; one that cannot is left alone, and asking for it says why."""
    config = tmp_path / "sentinel.toml"
    model = CONFIG.replace('detector = "lstm_ae"', f'detector = "{detector}"')
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        + model
        + "[retrain]\nevery = 300\nmin_rows = 256\nmin_new_rows = 200\n"
    )
    source = recording(tmp_path / "rig.csv")
    args = ["replay", str(source), "--config", str(config), "--out", str(tmp_path / "o.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("retraining: 2 scheduled runs in the data's time, 2 promoted" in out) == saved
    if not saved:
        assert main([*args, "--retrain"]) == 1
        assert "retraining in replay needs a detector that can be saved" in capsys.readouterr().err


def test_rows_the_pipeline_skips_show_the_verdict_before_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repeated or backwards time is refused by the pipeline, as live; its output row
    carries the latest verdict, and every other row gets its own."""
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)
    source = recording(tmp_path / "rig.csv", rows=700, fault=(600, 650))
    lines = source.read_text().splitlines(keepends=True)
    # Data rows are lines[1:]: repeat row 500, then give row 521 (after the insert) the
    # time of row 518, three seconds back.
    lines.insert(502, lines[501])
    lines[522] = lines[519].split(";")[0] + lines[522][lines[522].index(";") :]
    source.write_text("".join(lines))
    out = tmp_path / "o.csv"
    args = ["replay", str(source), "--config", str(config), "--out", str(out)]
    assert main([*args, "--train-rows", "400"]) == 0
    assert "rows skipped by the pipeline" in capsys.readouterr().err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 701
    assert rows[501]["score"] == rows[500]["score"] != ""  # the repeat
    assert rows[521]["score"] == rows[520]["score"] != ""  # the backwards row
    scores = [r["score"] for r in rows[420:]]
    assert len(set(scores)) > len(scores) - 5, "every accepted row has its own verdict"


def test_rows_with_a_missing_value_are_refused_as_live_and_nothing_else_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cell a historian exported empty or as NaN is the reading the daemon would refuse
    (missing_feature): the row is written with the verdict in force, it neither trains nor
    is fed, and every other row scores as in the file without it -- instead of the whole
    file being refused."""
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)
    source = recording(tmp_path / "rig.csv", rows=700, fault=(600, 650))
    lines = source.read_text().splitlines(keepends=True)
    holes = {101: "", 451: "NaN", 621: "nan"}  # data row -> its pressure cell (one trains)
    gapped = list(lines)
    for row, cell in holes.items():
        when, flow, _, label = lines[row + 1].rstrip("\n").split(";")
        gapped[row + 1] = f"{when};{flow};{cell};{label}\n"
    with_holes = tmp_path / "holes.csv"
    with_holes.write_text("".join(gapped))
    without = tmp_path / "without.csv"
    without.write_text("".join(line for i, line in enumerate(lines) if i - 1 not in holes))

    args = ["--config", str(config), "--no-retrain"]
    out_holes, out_without = tmp_path / "a.csv", tmp_path / "b.csv"
    assert (
        main(["replay", str(with_holes), *args, "--out", str(out_holes), "--train-rows", "400"])
        == 0
    )
    err = capsys.readouterr().err
    assert "3 rows left out, a value missing or not finite ({'missing_feature': 3}" in err
    assert "rows skipped by the pipeline: {'missing_feature': 2}" in err
    assert (
        main(["replay", str(without), *args, "--out", str(out_without), "--train-rows", "399"]) == 0
    )

    with out_holes.open() as handle:
        rows = list(csv.DictReader(handle))
    with out_without.open() as handle:
        reference = list(csv.DictReader(handle))
    assert len(rows) == 700
    assert len(reference) == 697
    kept = [r for i, r in enumerate(rows) if i not in holes]
    columns = ("score", "threshold", "is_anomaly", "check")
    assert [[r[c] for c in columns] for r in kept] == [[r[c] for c in columns] for r in reference]
    assert sum(r["alert_id"] != "" for r in kept) > 0, "the labelled fault still alerts"
    for row in (451, 621):  # scored rows: the verdict in force, the value shown as nan
        assert rows[row]["pressure"] == "nan"
        assert rows[row]["score"] == rows[row - 1]["score"] != ""


def without_times(source: Path, path: Path) -> Path:
    """``source`` (``recording``'s) with its time column cut off, as numbered samples are
    exported: ``flow;pressure;anomaly``."""
    lines = source.read_text().splitlines()
    path.write_text("".join(line.split(";", 1)[1] + "\n" for line in lines))
    return path


def test_a_file_without_times_or_config_replays_on_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No config anywhere and no time column: `--interval` spaces the rows, the defaults
    judge the file's own columns, and the label column is carried, never judged."""
    monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
    monkeypatch.setattr("sentinel.cli.main.DEFAULT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    source = without_times(recording(tmp_path / "rig.csv"), tmp_path / "samples.csv")
    out = tmp_path / "scores.csv"
    args = ["replay", str(source), "--out", str(out), "--train-rows", "400", "--no-retrain"]
    assert main([*args, "--interval", "60"]) == 0
    err = capsys.readouterr().err
    assert "features: flow, pressure (the file's columns" in err
    assert "labels carried, not judged: anomaly" in err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["timestamp", "flow", "pressure"]
    assert list(rows[0])[-1] == "anomaly"
    assert [r["timestamp"] for r in rows[:2]] == ["1970-01-01T00:00:00Z", "1970-01-01T00:01:00Z"]
    assert rows[-1]["timestamp"] == "1970-01-01T19:59:00Z"  # row 1,199: 1,199 minutes in
    assert any(r["alert_id"] for r in rows[900:1000]), "the fault raised no alert"
    assert not any(r["alert_id"] for r in rows[400:880]), "an alert before the fault"
    assert not (tmp_path / "sentinel-state").exists(), "replay wrote state"

    # Without --interval the file is refused, saying how to read it.
    assert main(args) == 1
    assert "give --interval SECONDS" in capsys.readouterr().err
    # A file with times keeps them: --interval is refused rather than silently ignored.
    timed = recording(tmp_path / "timed.csv", rows=500)
    assert main(["replay", str(timed), "--out", str(out), "--interval", "60"]) == 1
    assert "has the column 'datetime'; its times are used" in capsys.readouterr().err


def test_features_name_the_columns_a_config_without_streams_judges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config of settings alone (no [[streams]]) with --features: those columns judged, a
    named label column carried; --features on a config with streams replaces its stream's."""
    settings = tmp_path / "settings.toml"
    settings.write_text(CONFIG.split("[[streams]]")[0])
    source = recording(tmp_path / "rig.csv", rows=700, fault=(600, 650))
    out = tmp_path / "scores.csv"
    common = ["--out", str(out), "--no-retrain", "--label-columns", "anomaly"]
    assert main(["replay", str(source), "-c", str(settings), "--features", "flow", *common]) == 0
    with out.open() as handle:
        assert next(csv.reader(handle)) == [
            "timestamp",
            "flow",
            *("score", "threshold", "is_anomaly", "check", "alert_id"),
            "anomaly",
        ]
    full = tmp_path / "sentinel.toml"
    full.write_text(CONFIG)
    assert main(["replay", str(source), "-c", str(full), "--features", "pressure", *common]) == 0
    with out.open() as handle:
        assert next(csv.reader(handle))[:3] == ["timestamp", "pressure", "score"]
    assert (
        main(["replay", str(source), "-c", str(full), "--stream", "x", "--features", "a", *common])
        == 2
    )
    assert "no stream 'x' in the config (streams: rig)" in capsys.readouterr().err


def test_a_series_without_a_header_row_replays_as_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One column of numbers and nothing else, as the UCR anomaly archive writes its series:
    the column is ``value`` and its first line a reading; nothing else is needed."""
    monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
    monkeypatch.setattr("sentinel.cli.main.DEFAULT_CONFIG", str(tmp_path / "none.toml"))
    rng = np.random.default_rng(3)
    series = 10 + np.sin(np.arange(1500) / 6) + 0.05 * rng.standard_normal(1500)
    series[1200:1220] += 1.5  # an excursion
    source = tmp_path / "138_UCR_Anomaly_series_800_1200_1220.txt"
    source.write_text("".join(f"   {v:.7e}\n" for v in series))
    out = tmp_path / "scores.csv"
    args = ["replay", str(source), "--out", str(out), "--interval", "1", "--train-rows", "800"]
    assert main([*args, "--no-retrain"]) == 0
    assert "features: value (the file's columns" in capsys.readouterr().err
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1500, "the first line is a reading, not a header"
    assert float(rows[0]["value"]) == pytest.approx(series[0], abs=1e-3)
    scores = [float(r["score"] or 0) for r in rows]
    assert 1200 - 100 <= int(np.argmax(scores)) <= 1220 + 100, "the archive's rule: a hit"
    assert any(r["alert_id"] for r in rows[1200:1240])


def test_replay_trains_on_cold_start_readings_not_on_the_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon's first model also waits for cold_start.span of the stream's time; replay
    trains on cold_start.readings alone (an hour of a recording read every second would
    train into the anomalies of series whose training ends before it)."""
    config = tmp_path / "sentinel.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + CONFIG)  # span: an hour
    source = recording(tmp_path / "rig.csv", rows=4000, fault=(3100, 3200))
    args = ["replay", str(source), "--config", str(config), "--out", str(tmp_path / "o.csv")]
    assert main(args) == 0
    assert "4000 rows (400 trained on)" in capsys.readouterr().out
