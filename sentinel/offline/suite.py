"""Scoring for the detection suite (issue #21): labelled series against replay's output.

Rows, not seconds, are the unit: an event is an inclusive ``(first row, last row)`` pair of
row indices, so onset delays come out in readings whatever the sampling interval, and the
event matching is ``sentinel.offline.evaluation``'s own (overlap: an event is detected when
any prediction shares a row with it).

* A predicted event is one alert: the run of rows that carry the same ``alert_id`` in
  replay's output (or a run of anomalous verdicts, for verdict-level scores).
* ``grace``: a labelled event also counts as hit by a prediction that starts within
  ``grace`` readings after its last row. A window-based detector can only speak once a
  window that holds the event is complete, and an alert opens after ``open_after`` such
  windows: with strict overlap a 3-reading spike could never be hit, however well it was
  seen. The onset delay is still measured from the event's first row.
* An alert that closes and is reopened (``alerts.cooldown``) keeps its id: its runs of rows
  are one alert when alerts are counted (``keys``), so a reopened alert is not a second false
  alert; the rows between its runs are not rows in alerts.
* A false alert is a predicted event that overlaps no labelled event (grace included).
* ``flagged / labelled`` compares rows under predictions with rows labelled; issue #21's
  target is at most 1.5 for every class.
* The UCR anomaly archive's rule (Keogh et al., KDD Cup 2021): a series is solved when the row
  with the highest score after the training part lies within 100 readings of the labelled
  range. The file name ``<id>_UCR_Anomaly_<name>_<train_end>_<first>_<last>.txt`` gives the
  training end (rows ``[0, train_end)``) and the anomaly's first and last position, read as
  1-based (the shared README's reading of the archive's naming); :func:`ucr_spec` turns them
  into 0-based rows. Were they 0-based, every range would be one row later: immaterial
  beside the 100-reading tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sentinel.offline.evaluation import detection_delays, event_metrics, events_from_labels

__all__ = [
    "UCR_TOLERANCE",
    "RowEvent",
    "SeriesScore",
    "UcrOutcome",
    "UcrSpec",
    "id_events",
    "label_events",
    "pool_scores",
    "score_series",
    "ucr_outcome",
    "ucr_spec",
]

RowEvent = tuple[int, int]
"""An inclusive ``(first row, last row)`` span."""

UCR_TOLERANCE = 100  # readings either side of the labelled range, as the archive scores


def label_events(labels: npt.ArrayLike) -> list[RowEvent]:
    """Runs of 1 in a 0/1 sequence as inclusive row spans."""
    flags = np.asarray(labels)
    rows = np.arange(flags.size, dtype=np.float64)
    return [(int(a), int(b)) for a, b in events_from_labels(rows, flags)]


def id_events(ids: Sequence[str]) -> tuple[list[RowEvent], list[str]]:
    """Runs of the same non-empty id (e.g. replay's ``alert_id`` column) as row spans, and
    each run's id (the ``keys`` of :func:`score_series`).

    Two alerts back to back are two runs, even with no row between them; an alert reopened
    after a pause is two runs with one id.
    """
    events: list[RowEvent] = []
    keys: list[str] = []
    start = -1
    for i, uid in enumerate([*ids, ""]):
        if start >= 0 and uid != ids[start]:
            events.append((start, i - 1))
            keys.append(ids[start])
            start = -1
        if uid and start < 0:
            start = i
    return events, keys


@dataclass(frozen=True)
class SeriesScore:
    """How one series' (or a pool of series') predictions meet its labelled events."""

    events: int  # labelled events
    detected: int  # labelled events some prediction overlaps
    predicted: int  # predicted events (alerts)
    false_alerts: int  # predicted events that overlap no labelled event
    delays: tuple[int, ...]  # readings from each detected event's onset to the first prediction
    rows_flagged: int  # rows under some prediction
    rows_labelled: int

    @property
    def recall(self) -> float | None:
        return self.detected / self.events if self.events else None

    @property
    def precision(self) -> float | None:
        return (self.predicted - self.false_alerts) / self.predicted if self.predicted else None

    @property
    def mean_delay(self) -> float | None:
        return sum(self.delays) / len(self.delays) if self.delays else None

    @property
    def flagged_ratio(self) -> float | None:
        """Rows under predictions per labelled row (target: at most 1.5)."""
        return self.rows_flagged / self.rows_labelled if self.rows_labelled else None


def score_series(
    labels: npt.ArrayLike,
    predicted: Sequence[RowEvent],
    grace: int = 0,
    keys: Sequence[str] | None = None,
) -> SeriesScore:
    """Event-level outcome of ``predicted`` row spans against 0/1 ``labels``; a labelled
    event is hit by a prediction that overlaps it or starts up to ``grace`` rows after it.

    ``keys``: one per predicted span (e.g. its alert id); spans that share a key are counted
    as one prediction, which is a false alert only when none of them hits an event.
    """
    if grace < 0:
        raise ValueError(f"grace must not be negative, got {grace}")
    names = list(keys) if keys is not None else [str(i) for i in range(len(predicted))]
    if len(names) != len(predicted):
        raise ValueError(f"{len(names)} keys for {len(predicted)} predicted spans")
    truth = label_events(labels)
    as_float = [(float(a), float(b + grace)) for a, b in truth]
    pred_float = [(float(a), float(b)) for a, b in predicted]
    metrics = event_metrics(as_float, pred_float)
    delays = tuple(round(d) for d in detection_delays(as_float, pred_float))
    hitting = {
        name
        for name, span in zip(names, pred_float, strict=True)
        if event_metrics(as_float, [span]).matched_predictions
    }
    return SeriesScore(
        events=metrics.true_events,
        detected=metrics.detected_events,
        predicted=len(set(names)),
        false_alerts=len(set(names) - hitting),
        delays=delays,
        rows_flagged=sum(b - a + 1 for a, b in predicted),
        rows_labelled=int(np.sum(np.asarray(labels) == 1)),
    )


def pool_scores(scores: Iterable[SeriesScore]) -> SeriesScore:
    """Counts summed over series (each series' events matched within that series only)."""
    items = list(scores)
    return SeriesScore(
        events=sum(s.events for s in items),
        detected=sum(s.detected for s in items),
        predicted=sum(s.predicted for s in items),
        false_alerts=sum(s.false_alerts for s in items),
        delays=tuple(d for s in items for d in s.delays),
        rows_flagged=sum(s.rows_flagged for s in items),
        rows_labelled=sum(s.rows_labelled for s in items),
    )


# -- the UCR anomaly archive ----------------------------------------------------------------

_UCR_NAME = re.compile(r"^(?P<id>\d+)_UCR_Anomaly_(?P<name>.+)_(\d+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class UcrSpec:
    """One archive series' protocol, in 0-based rows."""

    name: str
    train_end: int  # rows [0, train_end) are normal and may train
    first: int  # the anomaly's first row
    last: int  # its last row (inclusive)


def ucr_spec(stem: str) -> UcrSpec:
    """``135_UCR_Anomaly_InternalBleeding16_1200_4187_4199`` -> train_end 1200, rows
    4186..4198 (the archive numbers the anomaly's positions from 1)."""
    match = _UCR_NAME.match(stem)
    if match is None:
        raise ValueError(f"{stem!r} is not <id>_UCR_Anomaly_<name>_<train>_<first>_<last>")
    train_end, first, last = (int(match.group(i)) for i in (3, 4, 5))
    if not 0 < train_end < first <= last:
        raise ValueError(f"{stem!r}: needs 0 < train end < first <= last")
    return UcrSpec(f"{match.group('id')}_{match.group('name')}", train_end, first - 1, last - 1)


@dataclass(frozen=True)
class UcrOutcome:
    spec: UcrSpec
    peak: int | None  # row of the highest score after train_end; None when nothing scored
    hit: bool


def ucr_outcome(spec: UcrSpec, scores: npt.ArrayLike, tolerance: int = UCR_TOLERANCE) -> UcrOutcome:
    """The archive's rule on per-row ``scores`` (NaN where a row has none): a hit when the
    first row holding the highest score from ``train_end`` on is within ``tolerance`` rows of
    ``[first, last]``."""
    values = np.asarray(scores, dtype=np.float64)
    test = values[spec.train_end :]
    if test.size == 0 or np.all(np.isnan(test)):
        return UcrOutcome(spec, None, False)
    peak = spec.train_end + int(np.nanargmax(test))
    hit = spec.first - tolerance <= peak <= spec.last + tolerance
    return UcrOutcome(spec, peak, hit)
