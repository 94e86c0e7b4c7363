"""Render a replay's scores CSV as a figure (PNG) or a self-contained HTML report.

The input is what ``sentinel replay --out`` writes: ``timestamp``, the feature columns,
``score``, ``threshold``, ``is_anomaly``, ``check``, ``alert_id`` and any carried columns
(labels, or anything else ``--label-columns`` took along): only the columns before
``score`` are drawn as features. The figure answers "where and why did it fire": one panel
per feature, then score against threshold; alerts are shaded blue across every panel,
labelled anomalies light red, so a detection that matches a label shows purple. Rows made
anomalous by the spike or the level check rather than by their score (``check`` without
``score``) get their own marker: their score sits under the threshold, and the HTML report's
alert table names the check and feature behind each alert.

matplotlib is imported inside the functions that draw, on the Agg canvas and without pyplot,
so the daemon never loads it and no display or global backend is touched.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentinel.errors import DataError
from sentinel.offline.csvdata import parse_timestamp

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LABEL_NAMES", "detect_label_columns", "render_report"]

REQUIRED_COLUMNS = ("timestamp", "score", "threshold", "is_anomaly")
_RESERVED = (*REQUIRED_COLUMNS, "check", "alert_id")
# Auto-detection: a column is a label when its normalised name (lower case, runs of other
# characters than letters and digits turned into "_") is one of these, starts with "label_"
# or ends with "_label", and every cell is 0, 1 or empty. SKAB carries anomaly/changepoint,
# NAB-style exports label/is_label.
LABEL_NAMES = frozenset(
    {"anomaly", "anomalies", "changepoint", "change_point", "label", "labels", "is_label"}
)
MAX_FEATURE_PANELS = 8  # more features than this are z-scored and overlaid, 4+ per panel
_MAX_TABLE_ROWS = 200

_ALERT_COLOUR = "#1e88e5"
_LABEL_COLOURS = ("#e53935", "#8d6e63", "#ad1457")  # interval labels, shaded
_EVENT_COLOURS = ("#b71c1c", "#4e342e", "#880e4f")  # point labels (changepoints), dashed
_LINE_COLOUR = "#263238"
_THRESHOLD_COLOUR = "#ef6c00"
_FLAG_COLOUR = "#0d47a1"
_CHECK_COLOUR = "#6a1b9a"


@dataclass(frozen=True)
class _Span:
    """A run of rows: an alert or a labelled interval."""

    name: str
    first: int  # row indexes, inclusive
    last: int
    rows: int


@dataclass(frozen=True)
class _Scores:
    path: Path
    epoch: np.ndarray  # (rows,) seconds since the epoch, UTC
    times: np.ndarray  # the same as datetime64[us], for matplotlib
    features: dict[str, np.ndarray]  # name -> (rows,) float, NaN where empty
    score: np.ndarray
    threshold: np.ndarray
    flagged: np.ndarray  # (rows,) bool
    checks: list[str]  # (rows,) the replay's check column: "score", "spike:flow", ...
    alerts: list[_Span]
    labels: dict[str, np.ndarray]  # column -> (rows,) bool

    @property
    def step(self) -> float:
        """Typical sampling interval in seconds (1 s when it cannot be told)."""
        steps = np.diff(self.epoch)
        steps = steps[steps > 0]
        return float(np.median(steps)) if steps.size else 1.0


def _datetime64(epoch: np.ndarray | float) -> np.ndarray:
    return (np.asarray(epoch, dtype=np.float64) * 1e6).astype("int64").astype("datetime64[us]")


def _normalise_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _binary(cells: Sequence[str]) -> np.ndarray | None:
    """0/1 cells (0.0/1.0, empty = 0) as booleans; None when any cell is something else."""
    values = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        text = cell.strip()
        if not text:
            continue
        try:
            number = float(text)
        except ValueError:
            return None
        if number not in (0.0, 1.0):
            return None
        values[i] = number == 1.0
    return values


def detect_label_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Label columns by the rule above (names in ``LABEL_NAMES``, ``label_*``, ``*_label``)."""
    found = []
    for index, name in enumerate(header):
        key = _normalise_name(name)
        if name in _RESERVED or not (
            key in LABEL_NAMES or key.startswith("label_") or key.endswith("_label")
        ):
            continue
        if _binary([row[index] for row in rows]) is not None:
            found.append(name)
    return found


def _maybe_numbers(cells: Sequence[str]) -> tuple[np.ndarray, int | None]:
    """Floats, NaN for empty cells, and the index of the first cell that is not a number."""
    values = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        text = cell.strip()
        if text:
            try:
                values[i] = float(text)
            except ValueError:
                return values, i
    return values, None


def _numbers(path: Path, name: str, cells: Sequence[str]) -> np.ndarray:
    values, bad = _maybe_numbers(cells)
    if bad is not None:
        raise DataError(f"{path}:{bad + 2}: column {name!r}: {cells[bad]!r} is not a number")
    return values


def _group_alerts(ids: Sequence[str]) -> list[_Span]:
    """One span per alert id, from its first row to its last, in order of first appearance."""
    spans: dict[str, list[int]] = {}
    for i, uid in enumerate(ids):
        uid = uid.strip()
        if uid:
            entry = spans.setdefault(uid, [i, i, 0])
            entry[1] = i
            entry[2] += 1
    return [_Span(uid, first, last, rows) for uid, (first, last, rows) in spans.items()]


def _runs(name: str, mask: np.ndarray) -> list[_Span]:
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [
        _Span(name, int(start), int(stop) - 1, int(stop - start))
        for start, stop in zip(edges[::2], edges[1::2], strict=True)
    ]


def _read(path: Path, label_columns: Sequence[str] | None) -> _Scores:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            table = list(csv.reader(handle))
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err
    if not table:
        raise DataError(f"{path}: the file is empty")
    header = [h.strip() for h in table[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; is this a 'sentinel replay' "
            f"scores file? It has: {', '.join(header)}"
        )
    rows = [row for row in table[1:] if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: no data rows")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: {len(row)} fields, the header has {len(header)}")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}

    detected = detect_label_columns(header, rows)
    if label_columns is None:
        label_columns = detected
    labels: dict[str, np.ndarray] = {}
    for name in label_columns:
        if name not in columns:
            raise DataError(f"{path}: no label column {name!r}")
        mask = _binary(columns[name])
        if mask is None:
            raise DataError(f"{path}: label column {name!r} holds values other than 0 and 1")
        labels[name] = mask

    epoch = np.empty(len(rows))
    for i, cell in enumerate(columns["timestamp"]):
        try:
            epoch[i] = parse_timestamp(cell)
        except ValueError as err:
            raise DataError(f"{path}:{i + 2}: unparsable timestamp {cell!r}") from err
    flagged = _numbers(path, "is_anomaly", columns["is_anomaly"])
    features: dict[str, np.ndarray] = {}
    # Replay writes the features between timestamp and score; what it carried from its
    # input (labels, a train/test split) comes after its own columns and is never a feature.
    for name in header[: header.index("score")]:
        if name in _RESERVED or name in labels or name in detected:  # unchosen labels too
            continue
        # Columns that are not numbers (a device id, say) cannot be plotted and are left out.
        values, bad = _maybe_numbers(columns[name])
        if bad is None and not np.isnan(values).all():
            features[name] = values
    return _Scores(
        path=path,
        epoch=epoch,
        times=_datetime64(epoch),
        features=features,
        score=_numbers(path, "score", columns["score"]),
        threshold=_numbers(path, "threshold", columns["threshold"]),
        flagged=np.nan_to_num(flagged) > 0,
        checks=[c.strip() for c in columns.get("check", [""] * len(rows))],
        alerts=_group_alerts(columns.get("alert_id", [""] * len(rows))),
        labels=labels,
    )


# The checks beside the score, and the marker of the rows each made anomalous on its own.
_CHECK_MARKERS = {
    "spike": "^",
    "level": "s",
    "constant": "X",
    "stuck": "D",
    "relation": "P",
    "noise": "*",
    "period": "v",
}


def _forced(s: _Scores, kind: str) -> np.ndarray:
    """Rows made anomalous by the ``kind`` check (a key of ``_CHECK_MARKERS``) and not by
    their score."""
    return np.array(
        [
            "score" not in parts and any(p.startswith(f"{kind}:") for p in parts)
            for parts in (c.split("+") for c in s.checks)
        ],
        dtype=bool,
    )


def _why(checks: Sequence[str]) -> str:
    """The distinct checks behind some rows, most frequent first: "level:flow (40), score (3)"."""
    counts: dict[str, int] = {}
    for cell in checks:
        for part in filter(None, cell.split("+")):
            counts[part] = counts.get(part, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} ({n})" for name, n in ranked)


def _feature_groups(names: Sequence[str]) -> list[list[str]]:
    if len(names) <= MAX_FEATURE_PANELS:
        return [[name] for name in names]
    # At least 4 to a panel, at most 4 panels, the same number (give or take one) in each.
    panels = min(MAX_FEATURE_PANELS // 2, math.ceil(len(names) / 4))
    size, extra = divmod(len(names), panels)
    bounds = itertools.accumulate((size + (k < extra) for k in range(panels)), initial=0)
    return [list(names[a:b]) for a, b in itertools.pairwise(bounds)]


def _zscore(values: np.ndarray) -> np.ndarray:
    if np.isnan(values).all():
        return values
    spread = float(np.nanstd(values))
    return np.asarray((values - np.nanmean(values)) / (spread if spread > 0 else 1.0))


def _use_log_scale(score: np.ndarray, threshold: np.ndarray) -> bool:
    values = np.concatenate((score, threshold))
    values = values[np.isfinite(values)]
    return bool(values.size and values.min() > 0 and values.max() / values.min() >= 100)


@dataclass(frozen=True)
class _LabelStyle:
    name: str
    runs: list[_Span]
    events: bool  # every run is one row (SKAB changepoints): dashed lines, not shading
    colour: str


def _label_styles(s: _Scores) -> list[_LabelStyle]:
    styles = []
    for k, (name, mask) in enumerate(s.labels.items()):
        runs = _runs(name, mask)
        events = bool(runs) and all(run.rows == 1 for run in runs)
        palette = _EVENT_COLOURS if events else _LABEL_COLOURS
        styles.append(_LabelStyle(name, runs, events, palette[k % len(palette)]))
    return styles


def _shade(ax: Axes, s: _Scores, labels: Sequence[_LabelStyle]) -> None:
    half = np.timedelta64(int(s.step * 5e5), "us")  # each row stands for half a step each side
    times = s.times
    spans = [(span, _ALERT_COLOUR, 0.22) for span in s.alerts]
    spans += [
        (run, style.colour, 0.16) for style in labels if not style.events for run in style.runs
    ]
    for span, colour, alpha in spans:
        ax.axvspan(
            times[span.first] - half,
            times[span.last] + half,
            color=colour,
            alpha=alpha,
            lw=0,
            zorder=0,
        )
    for style in labels:
        if style.events:
            for run in style.runs:
                ax.axvline(times[run.first], color=style.colour, ls="--", lw=1.0, zorder=1)


def _figure(s: _Scores, title: str) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups = _feature_groups(list(s.features))
    # Row 0 is an empty strip that holds the key: a legend on an axes of its own is laid out
    # by constrained layout, where a figure legend collides with the suptitle and a second
    # legend on a panel (normalised panels already have one) is not laid out at all.
    ratios = [0.01] + [1.0] * len(groups) + [1.8]
    fig = Figure(figsize=(12, 1.4 + 1.05 * len(groups) + 1.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, set here: no display, no pyplot, no global backend change
    key, *axes = fig.subplots(len(ratios), 1, sharex=True, height_ratios=ratios, squeeze=False)[
        :, 0
    ]
    key.axis("off")
    times = s.times
    marker = "o" if len(times) <= 50 else None
    normalised = len(groups) < len(s.features)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
    for ax, group in zip(axes, groups, strict=False):
        for k, name in enumerate(group):
            values = _zscore(s.features[name]) if normalised else s.features[name]
            colour = palette[k % len(palette)] if normalised else _LINE_COLOUR
            ax.plot(times, values, lw=0.9, color=colour, marker=marker, ms=3, label=name)
        if normalised:
            # Beside the panel, not over the data.
            ax.legend(
                loc="upper left",
                bbox_to_anchor=(1.005, 1.0),
                fontsize=7,
                ncol=math.ceil(len(group) / 6),
                frameon=False,
                borderaxespad=0,
                handlelength=1.2,
            )
            ax.set_ylabel("z-score", fontsize=8)
        else:
            ax.text(
                0.005,
                0.93,
                group[0],
                transform=ax.transAxes,
                va="top",
                fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.9, "lw": 0, "pad": 1.5},
            )
        ax.tick_params(labelsize=7)
        ax.margins(x=0)

    ax = axes[-1]
    ax.plot(times, s.score, color=_LINE_COLOUR, lw=1.0, marker=marker, ms=3)
    ax.plot(times, s.threshold, color=_THRESHOLD_COLOUR, lw=1.2, ls="--")
    flagged = s.flagged & np.isfinite(s.score)
    forced = {kind: flagged & _forced(s, kind) for kind in _CHECK_MARKERS}
    by_score = flagged & ~np.logical_or.reduce(list(forced.values()))
    ax.scatter(times[by_score], s.score[by_score], s=9, color=_FLAG_COLOUR, zorder=3)
    extra_handles = []
    for kind, shape in _CHECK_MARKERS.items():
        rows = forced[kind]
        if rows.any():
            ax.scatter(
                times[rows], s.score[rows], s=16, marker=shape, color=_CHECK_COLOUR, zorder=4
            )
            extra_handles.append(
                Line2D([], [], color=_CHECK_COLOUR, marker=shape, ms=5, lw=0, label=f"{kind} check")
            )
    if _use_log_scale(s.score, s.threshold):
        ax.set_yscale("log")
    if not np.isfinite(s.score).any():
        ax.text(
            0.5,
            0.5,
            "no scored windows",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#607d8b",
        )
    if s.epoch[-1] == s.epoch[0]:  # one instant: matplotlib would widen the axis to years
        ax.set_xlim(times[0] - np.timedelta64(30, "s"), times[0] + np.timedelta64(30, "s"))
    ax.set_ylabel("anomaly score", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.margins(x=0)
    ax.set_xlabel("time (UTC)", fontsize=9)
    # matplotlib's own annotations leave these two constructors untyped
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    labels = _label_styles(s)
    for each in axes:
        _shade(each, s, labels)
        each.grid(axis="x", color="#cfd8dc", lw=0.5)

    handles = [
        Line2D([], [], color=_LINE_COLOUR, lw=1.0, label="score"),
        Line2D([], [], color=_THRESHOLD_COLOUR, lw=1.2, ls="--", label="threshold"),
        Line2D([], [], color=_FLAG_COLOUR, marker="o", ms=4, lw=0, label="anomalous row"),
        *extra_handles,
        Patch(color=_ALERT_COLOUR, alpha=0.3, label="alert"),
    ]
    for style in labels:
        name = style.name
        if style.events:
            handles.append(Line2D([], [], color=style.colour, ls="--", label=f"label: {name}"))
        else:
            handles.append(Patch(color=style.colour, alpha=0.25, label=f"label: {name}"))
    key.legend(
        handles=handles, loc="center", ncol=len(handles), fontsize=9, frameon=False, borderaxespad=0
    )
    fig.suptitle(f"{title}\n{_summary_line(s, title)}", fontsize=11)
    return fig


def _summary_line(s: _Scores, title: str) -> str:
    parts = [
        _plural(len(s.epoch), "row"),
        f"{int(s.flagged.sum()):,} anomalous",
        _plural(len(s.alerts), "alert"),
    ]
    if s.path.name not in title:
        parts.insert(0, s.path.name)
    if len(s.features) > MAX_FEATURE_PANELS:
        parts.append(f"{len(s.features)} features, z-scored")
    return "  ·  ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _fmt_time(epoch: float) -> str:
    when = datetime.fromtimestamp(epoch, UTC)
    spec = "seconds" if epoch == int(epoch) else "milliseconds"
    return when.isoformat(sep=" ", timespec=spec).replace("+00:00", "Z")


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _overlaps(span: _Span, others: Sequence[_Span]) -> bool:
    return any(span.first <= o.last and o.first <= span.last for o in others)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f"<p class='none'>{html.escape(empty)}</p>"
    more = len(rows) - _MAX_TABLE_ROWS
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows[:_MAX_TABLE_ROWS]
    )
    tail = f"<p class='none'>… and {more} more</p>" if more > 0 else ""
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    thead = f"<thead><tr>{heads}</tr></thead>" if any(head) else ""
    return f"<table>{thead}<tbody>{cells}</tbody></table>{tail}"


def _html(s: _Scores, title: str, png: bytes) -> str:
    label_runs = {name: _runs(name, mask) for name, mask in s.labels.items()}
    all_label_runs = [run for runs in label_runs.values() for run in runs]
    scored = np.isfinite(s.score)
    summary = [
        ("file", str(s.path.name)),
        ("time range", f"{_fmt_time(s.epoch[0])} to {_fmt_time(s.epoch[-1])}"),
        ("rows", f"{len(s.epoch):,}"),
        ("scored rows", f"{int(scored.sum()):,}"),
        ("anomalous rows", f"{int(s.flagged.sum()):,}"),
        ("alerts", str(len(s.alerts))),
        ("features", ", ".join(s.features) or "none"),
        ("label columns", ", ".join(s.labels) or "none"),
    ]
    has_checks = any(s.checks)
    if has_checks:
        summary.insert(5, ("anomalous rows by check", _why(s.checks) or "none"))
    alert_rows = []
    for span in s.alerts:
        peak = s.score[span.first : span.last + 1]
        peak = peak[np.isfinite(peak)]
        row = [
            span.name,
            _fmt_time(s.epoch[span.first]),
            _fmt_time(s.epoch[span.last]),
            _fmt_duration(s.epoch[span.last] - s.epoch[span.first]),
            str(span.rows),
            f"{peak.max():.4g}" if peak.size else "",
        ]
        if has_checks:
            row.append(_why(s.checks[span.first : span.last + 1]))
        if s.labels:
            row.append("yes" if _overlaps(span, all_label_runs) else "no")
        alert_rows.append(row)
    alert_head = ["alert", "start", "end", "duration", "rows", "peak score"]
    if has_checks:
        alert_head.append("why (anomalous rows)")
    if s.labels:
        alert_head.append("overlaps a label")
    label_rows = [
        [
            name,
            _fmt_time(s.epoch[run.first]),
            _fmt_time(s.epoch[run.last]),
            _fmt_duration(s.epoch[run.last] - s.epoch[run.first]),
            str(run.rows),
            "yes" if _overlaps(run, s.alerts) else "no",
        ]
        for name, runs in label_runs.items()
        for run in runs
    ]
    labels_section = ""
    if s.labels:
        labels_section = "<h2>Labelled intervals</h2>" + _table(
            ["label", "start", "end", "duration", "rows", "alerted"],
            label_rows,
            "No labelled intervals.",
        )
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #263238; }}
img {{ max-width: 100%; height: auto; border: 1px solid #cfd8dc; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #cfd8dc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eceff1; }}
.none {{ color: #607d8b; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<img src="data:image/png;base64,{image}" alt="features, score and alerts over time">
<h2>Summary</h2>
{_table(["", ""], [list(pair) for pair in summary], "")}
<h2>Alerts</h2>
{_table(alert_head, alert_rows, "No alerts.")}
{labels_section}
</body></html>
"""


def render_report(
    scores_csv: Path,
    out: Path,
    *,
    label_columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Draw a replay's scores CSV to ``out``: ``.png`` (the figure) or ``.html`` (figure + tables).

    ``label_columns`` names ground-truth 0/1 columns to shade; by default they are detected by
    name (see ``LABEL_NAMES``). Every problem with the input or output is a ``DataError``.
    """
    scores_csv, out = Path(scores_csv), Path(out)
    kind = out.suffix.lower()
    if kind not in (".png", ".html", ".htm"):
        raise DataError(f"{out}: unsupported report type {out.suffix!r}; use .png or .html")
    scores = _read(scores_csv, label_columns)
    title = title or f"Sentinel replay: {scores_csv.name}"
    figure = _figure(scores, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png = buffer.getvalue()
    try:
        if kind == ".png":
            out.write_bytes(png)
        else:
            out.write_text(_html(scores, title, png), encoding="utf-8")
    except OSError as err:
        raise DataError(f"{out}: cannot write: {err.strerror}") from err
