from __future__ import annotations

import csv
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sentinel.errors import DataError
from sentinel.offline.report import render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SKAB_FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
START = datetime(2020, 3, 9, 10, 14, 33, tzinfo=UTC)


def write_scores(
    path: Path,
    *,
    features: tuple[str, ...] = ("temp", "vibration"),
    rows: int = 400,
    window: int = 20,
    anomaly: tuple[int, int] = (250, 300),
    alert: tuple[int, int] | None = (258, 304),
    labels: tuple[str, ...] = ("anomaly", "changepoint"),
) -> Path:
    """A replay output: sine features, a step injected at ``anomaly``, an alert over ``alert``."""
    rng = np.random.default_rng(7)
    t = np.arange(rows)
    inside = (t >= anomaly[0]) & (t < anomaly[1])
    values = {
        name: 10 * (k + 1) + np.sin(t / (15 + 4 * k)) + 0.1 * rng.standard_normal(rows)
        for k, name in enumerate(features)
    }
    values[features[0]] = values[features[0]] + 3.0 * inside
    score = 0.02 + 0.01 * rng.random(rows) + 2.0 * inside  # two orders of magnitude
    flagged = score > 0.5
    header = ["timestamp", *features, "score", "threshold", "is_anomaly", "alert_id", *labels]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(rows):
            scored = i >= window - 1
            in_alert = alert is not None and alert[0] <= i <= alert[1]
            label_cells = {
                "anomaly": f"{float(inside[i]):.1f}",
                "changepoint": f"{float(i in anomaly):.1f}",
                "split": str(int(i >= rows // 2)),  # carried, not a label by its name
            }
            writer.writerow(
                [
                    (START + timedelta(seconds=i)).isoformat(),
                    *(f"{values[name][i]:.4f}" for name in features),
                    f"{score[i]:.5f}" if scored else "",
                    "0.5" if scored else "",
                    int(scored and bool(flagged[i])),
                    "a1b2c3" if in_alert else "",
                    *(label_cells.get(name, "0") for name in labels),
                ]
            )
    return path


def assert_png(path: Path, min_width: int = 600) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_width
    assert 200 <= height <= 3000


def test_png_from_synthetic_scores(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "scores.csv")
    out = tmp_path / "report.png"
    render_report(scores, out)
    assert_png(out)


def test_html_embeds_figure_and_lists_alert_and_labels(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "scores.csv")
    out = tmp_path / "report.html"
    render_report(scores, out, title="Pump 3 <replay>")
    text = out.read_text()
    assert '<img src="data:image/png;base64,' in text
    assert "a1b2c3" in text
    assert "2020-03-09 10:18:51Z" in text  # alert start, row 258
    assert "Labelled intervals" in text
    assert "Pump 3 &lt;replay&gt;" in text  # escaped
    assert "<td>a1b2c3</td>" in text
    assert "<td>yes</td>" in text  # the alert overlaps the labelled interval


def test_rows_forced_by_a_check_are_explained(tmp_path: Path) -> None:
    """A level-forced window scores under its threshold: the report names the check."""
    scores = tmp_path / "scores.csv"
    lines = ["timestamp,flow,score,threshold,is_anomaly,check,alert_id"]
    for i in range(60):
        when = (START + timedelta(seconds=i)).isoformat()
        if 20 <= i < 30:  # forced by the level of flow, score under the threshold
            lines.append(f"{when},31,0.2,0.5,1,level:flow,e1")
        elif i == 30:  # still the same alert, now above the threshold as well
            lines.append(f"{when},29,0.9,0.5,1,score+level:flow,e1")
        elif i == 45:  # a spike alone
            lines.append(f"{when},60,0.3,0.5,1,spike:flow,e2")
        else:
            lines.append(f"{when},32,0.2,0.5,0,,")
    scores.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.html"
    render_report(scores, out)
    text = out.read_text()
    assert (
        "<td>anomalous rows by check</td><td>level:flow (11), score (1), spike:flow (1)</td>"
        in text
    )
    assert "<td>level:flow (11), score (1)</td>" in text  # alert e1's row
    assert "<td>spike:flow (1)</td>" in text  # alert e2's row
    assert "<td>features</td><td>flow</td>" in text  # check is not a feature
    render_report(scores, tmp_path / "r.png")
    assert_png(tmp_path / "r.png")


def test_scores_without_a_check_column_still_render(tmp_path: Path) -> None:
    """Files written before the column existed: no "why" column, nothing else lost."""
    scores = write_scores(tmp_path / "scores.csv")
    out = tmp_path / "r.html"
    render_report(scores, out)
    text = out.read_text()
    assert "why (anomalous rows)" not in text
    assert "anomalous rows by check" not in text
    assert "<td>a1b2c3</td>" in text


def test_text_columns_are_not_plotted(tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text(
        "timestamp,device,temp,score,threshold,is_anomaly,alert_id\n"
        "2020-01-01T00:00:00Z,pump-3,20.5,,,0,\n"
        "2020-01-01T00:00:01Z,pump-3,20.7,0.1,0.5,0,\n"
    )
    out = tmp_path / "r.html"
    render_report(scores, out)
    assert "<td>features</td><td>temp</td>" in out.read_text()


def test_explicit_labels_and_no_alerts(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "scores.csv", alert=None)
    out = tmp_path / "report.html"
    render_report(scores, out, label_columns=["anomaly"])
    text = out.read_text()
    assert "No alerts." in text
    assert "changepoint" not in text.split("Labelled intervals")[1]
    assert "<td>features</td><td>temp, vibration</td>" in text  # nor plotted as a feature


def test_carried_columns_are_not_drawn_as_features(tmp_path: Path) -> None:
    """Replay writes its features between timestamp and score and carried columns after its
    own: a numeric carried column (a train/test split) is not a feature to plot."""
    scores = write_scores(tmp_path / "scores.csv", labels=("anomaly", "split"))
    out = tmp_path / "report.html"
    render_report(scores, out)
    text = out.read_text()
    assert "<td>features</td><td>temp, vibration</td>" in text
    assert "label columns</td><td>anomaly<" in text
    render_report(scores, out, label_columns=["anomaly", "split"])  # named: a label after all
    assert "label columns</td><td>anomaly, split<" in out.read_text()


def test_no_labels_single_row_and_empty_scores(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "one.csv", rows=1, anomaly=(5, 6), alert=None, labels=())
    render_report(scores, tmp_path / "one.png")
    assert_png(tmp_path / "one.png")
    html = tmp_path / "one.html"
    render_report(scores, html)
    assert "label columns</td><td>none" in html.read_text()


def test_wide_skab_file(tmp_path: Path) -> None:
    scores = write_scores(
        tmp_path / "skab.csv",
        features=SKAB_FEATURES,
        rows=1200,
        anomaly=(700, 900),
        alert=(712, 905),
    )
    out = tmp_path / "skab.png"
    render_report(scores, out)
    assert_png(out, min_width=1000)


def test_many_features_are_grouped(tmp_path: Path) -> None:
    features = tuple(f"sensor_{k}" for k in range(20))
    scores = write_scores(
        tmp_path / "wide.csv", features=features, rows=200, anomaly=(120, 150), alert=(125, 152)
    )
    out = tmp_path / "wide.png"
    render_report(scores, out)
    assert_png(out)
    from matplotlib.image import imread

    assert imread(out).shape[0] < 1400  # 20 features in a few panels, not 20 panels


def test_feature_grouping() -> None:
    from sentinel.offline.report import _feature_groups

    assert [len(g) for g in _feature_groups([str(k) for k in range(8)])] == [1] * 8
    assert [len(g) for g in _feature_groups([str(k) for k in range(9)])] == [3, 3, 3]
    assert [len(g) for g in _feature_groups([str(k) for k in range(50)])] == [13, 13, 12, 12]


def test_errors(tmp_path: Path) -> None:
    scores = write_scores(tmp_path / "scores.csv", rows=30)
    with pytest.raises(DataError, match="no such file"):
        render_report(tmp_path / "missing.csv", tmp_path / "r.png")
    with pytest.raises(DataError, match=r"unsupported report type '\.pdf'"):
        render_report(scores, tmp_path / "r.pdf")
    with pytest.raises(DataError, match="no label column 'truth'"):
        render_report(scores, tmp_path / "r.png", label_columns=["truth"])
    with pytest.raises(DataError, match="values other than 0 and 1"):
        render_report(scores, tmp_path / "r.png", label_columns=["temp"])
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,temp,score\n2020-01-01T00:00:00,1,0.1\n")
    with pytest.raises(DataError, match=r"missing column.*threshold, is_anomaly"):
        render_report(bad, tmp_path / "r.png")
    bad.write_text("timestamp,score,threshold,is_anomaly\nyesterday,1,1,0\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: unparsable timestamp"):
        render_report(bad, tmp_path / "r.png")
    bad.write_text("timestamp,score,threshold,is_anomaly\n2020-01-01T00:00:00,high,1,0\n")
    with pytest.raises(DataError, match="column 'score': 'high' is not a number"):
        render_report(bad, tmp_path / "r.png")
    bad.write_text("timestamp,score,threshold,is_anomaly\n")
    with pytest.raises(DataError, match="no data rows"):
        render_report(bad, tmp_path / "r.png")


def test_label_detection_rule(tmp_path: Path) -> None:
    from sentinel.offline.report import detect_label_columns

    header = ["timestamp", "is_anomaly", "Anomaly", "change point", "label_valve", "label", "x"]
    rows = [["t", "1", "0.0", "1", "", "normal", "1"], ["t", "0", "1.0", "0", "1", "attack", "0"]]
    # "label" holds text, "x" is not a label name, is_anomaly is the detector's own column
    assert detect_label_columns(header, rows) == ["Anomaly", "change point", "label_valve"]


def test_matplotlib_is_not_imported_with_the_module() -> None:
    code = "import sys, sentinel.offline.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_scale_rule() -> None:
    from sentinel.offline.report import _use_log_scale

    assert _use_log_scale(np.array([0.01, 2.0, math.nan]), np.array([0.5]))
    assert not _use_log_scale(np.array([0.0, 2.0]), np.array([0.5]))
    assert not _use_log_scale(np.array([1.0, 2.0]), np.array([1.5]))
