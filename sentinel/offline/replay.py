"""Replay a recorded CSV through the live pipeline's own code, driven by the file's time.

The first rows train the initial model (labels unseen); the last of them
(``cold_start.warm_readings``) then warm the device's threshold and spike memory with alerts
suppressed (``Pipeline.warm_up``, the daemon's own warm start); every later row becomes a
reading of one device, fed to ``Pipeline.process`` in order -- the same windows, model,
thresholds and alert logic as ``sentinel run``, with event time from the file instead of
the clock.
Readings go in passes of up to 256, as the live worker drains its queue, so the model
scores a batch of windows at a time; a pass ends at the row where a scheduled retraining
fires, so a new model takes over from the same row as if the clock ticked every row.
One output row per input row: what the detector said at that moment, and the alert whose
evidence covers it (``alert_id``; :class:`AlertRows`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentinel.config import SentinelConfig, StreamConfig
from sentinel.errors import DataError
from sentinel.judge.evidence import onset
from sentinel.model import Detector, detector_type, scoring_device, training_options
from sentinel.model.numpy_lstm import for_scoring
from sentinel.offline.csvdata import RecordedData
from sentinel.records import (
    Alert,
    AlertStatus,
    Delivery,
    Reading,
    Rejected,
    Verdict,
    WriteBatch,
)
from sentinel.retrain.clock import DataClockRetrainer
from sentinel.worker.coldstart import TrainingJob
from sentinel.worker.pipeline import Pipeline

__all__ = ["AlertRows", "ReplaySummary", "replay", "split_labels"]

_BATCH = 256  # readings per pipeline pass, as the live worker drains its queue


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    train_rows: int
    scored_windows: int
    anomalous_rows: int
    alerts: int
    model_version: str
    seconds: float
    retrain_runs: int = 0  # with retrain=True: scheduled runs in the data's time ...
    retrain_promoted: int = 0  # ... and how many of them swapped in a new model
    retrain_skipped: int = 0  # ... and how many trained nothing (too little clean or new data)


@dataclass
class _State:
    """What the detector says right now; each output row takes the latest."""

    score: float | None = None
    threshold: float | None = None
    is_anomaly: bool = False
    check: str = ""
    scored: int = 0


class AlertRows:
    """Which alert each row belongs to: the span of its evidence, as the alert records it.

    An alert's run starts at the first evidence of its first anomalous window
    (``started_at``; for a run that reopened an alert within its cooldown, that of the
    run's first anomalous window) and ends at its latest evidence (``ended_at``; see
    ``sentinel.judge.evidence``). The rows between are the alert's; the windows that still
    held old evidence, the ``close_after`` normal windows that had to pass before the alert
    could close, the windows of M-of-N that came before the opening one, and the normal
    stretch between an alert's end and its reopening are what the alert was *not* about.
    Evaluations score alerts by these rows and onsets (issue #21: an alert's onset time is
    what evaluation uses, and it closes when the evidence does).

    Fed every verdict in order with the alert change it caused (the pipeline's observer);
    ``span`` is ``alerts.window_span``, the M-of-N history the tracker opens from.
    """

    def __init__(self, span: int) -> None:
        # The verdicts since the device's last alert opened: the alert tracker's own M-of-N
        # history, from which an (re)opening run starts (``sentinel.judge.evidence.onset``).
        self._recent: deque[Verdict] = deque(maxlen=span)
        self._normal_end = float("-inf")  # newest reading of the latest normal window
        self._open: tuple[str, float, float] | None = None  # uid, run start, last evidence
        self.spans: list[tuple[float, float, str]] = []  # (first, last, uid), inclusive

    def observe(self, verdict: Verdict, alert: Alert | None) -> None:
        last = (verdict.evidence or (verdict.score.window.end_ts,) * 2)[1]
        if not verdict.is_anomaly:
            self._normal_end = max(self._normal_end, verdict.score.window.end_ts)
        if self._open is None:
            self._recent.append(verdict)
        elif verdict.is_anomaly:
            uid, start, seen = self._open
            self._open = (uid, start, max(seen, last))
        if alert is None:
            return
        if alert.status is AlertStatus.CLOSED:
            if self._open is not None:
                uid, start, seen = self._open
                end = alert.ended_at if alert.ended_at is not None else seen
                self.spans.append((start, end, uid))
            self._open = None
            return
        if self._open is None:  # opened, or reopened within the cooldown
            run = [v for v in self._recent if v.is_anomaly] or [verdict]
            self._recent.clear()
            self._open = (alert.uid, onset(run, self._normal_end), last)

    def finish(self) -> None:
        """An alert still open at the end of the data: its evidence so far."""
        if self._open is not None:
            uid, start, last = self._open
            self.spans.append((start, last, uid))
            self._open = None

    def ids(self, timestamps: np.ndarray, first_row: int) -> list[str]:
        """Per row, the uid of the alert whose span holds its time ("" for none); rows
        before ``first_row`` (training) hold none."""
        ids = [""] * len(timestamps)
        ts = np.asarray(timestamps, dtype=np.float64)
        for start, end, uid in self.spans:
            rows = np.flatnonzero((ts >= start) & (ts <= end))
            for i in rows[rows >= first_row]:
                ids[i] = uid
        return ids


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def why_anomalous(verdict: Verdict, features: Sequence[str]) -> str:
    """Which checks made a window anomalous, for the output's ``check`` column: ``score``
    (above the threshold), ``spike:FEATURE`` (sentinel.judge.spikes), ``level:FEATURE``
    (sentinel.judge.shifts, sentinel.judge.levels), ``constant:FEATURE`` (sentinel.judge.constants),
    ``stuck:FEATURE`` (sentinel.judge.stuck), ``relation:FEATURE`` (sentinel.judge.relations),
    ``noise:FEATURE`` (sentinel.judge.noise), ``period:FEATURE`` (sentinel.judge.periods),
    joined by ``+``; empty for a normal window."""
    if not verdict.is_anomaly:
        return ""
    parts = []
    if verdict.score.value > verdict.threshold:
        parts.append("score")
    hits = (
        ("spike", verdict.spike),
        ("level", verdict.level),
        ("constant", verdict.constant),
        ("stuck", verdict.stuck),
        ("relation", verdict.relation),
        ("noise", verdict.noise),
        ("period", verdict.period),
    )
    for kind, hit in hits:
        if hit is not None:
            name = features[hit.feature] if hit.feature < len(features) else str(hit.feature)
            parts.append(f"{kind}:{name}")
    return "+".join(parts) or "score"


def replay(
    config: SentinelConfig,
    stream: StreamConfig,
    data: RecordedData,
    out: Path,
    *,
    device: str,
    train_rows: int,
    torch_device: torch.device,
    detector: Detector | None = None,
    show_progress: bool = True,
    retrain: bool = False,
) -> ReplaySummary:
    """Train on the first ``train_rows`` rows (unless a detector is given), score the rest.

    Rows used for training are written too, with empty scores, so the output lines up
    with the input row for row. ``retrain``: retrain on the ``[retrain]`` schedule in the
    file's own time, as the daemon would (``sentinel.retrain.clock``), in a scratch state
    directory.
    """
    if data.timestamps is None:
        raise DataError("replay needs a timestamp column: event time drives the pipeline")
    started = time.monotonic()
    rows = len(data.values)
    window = config.windows.length
    if detector is None:
        if train_rows < 4 * window or train_rows >= rows:
            raise DataError(
                f"--train-rows {train_rows}: need at least {4 * window} (4 windows) and fewer "
                f"than the file's {rows} rows"
            )
        head = RecordedData(
            data.values[:train_rows],
            data.timestamps[:train_rows],
            data.features,
            data.max_gap,
            refused={i: why for i, why in data.refused.items() if i < train_rows},
        )
        # As the cold start does: the interval learnt from the training rows scales the
        # auto time settings, and the model keeps it (sentinel.timescale).
        detector = detector_type(config.model.detector).train(
            head.training_segments(min_length=window),
            training_options(config, stream.name, head.interval),
            device=torch_device,
            first_ts=head.first_ts,
            last_ts=head.last_ts,
        )
    else:
        train_rows = 0
    # Scored as the daemon would score it: by NumPy on the CPU unless model.runtime or a GPU
    # says torch (sentinel.model.device.scoring_device).
    numpy_scoring = scoring_device(config.model) is None
    if numpy_scoring:
        detector = for_scoring(detector)

    state = _State()
    alerts: set[str] = set()
    alert_rows = AlertRows(config.alerts.window_span)
    features = tuple(stream.feature_names)
    # What the detector said after each window of the current pass, by the window's last
    # reading's time: each output row shows the latest verdict up to its own time.
    said: deque[tuple[float, _State]] = deque()

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        state.score = verdict.score.value
        state.threshold = verdict.threshold
        state.is_anomaly = verdict.is_anomaly
        state.check = why_anomalous(verdict, features)
        state.scored += 1
        alert_rows.observe(verdict, alert)
        if alert is not None:
            alerts.add(alert.uid)
        said.append((verdict.score.window.end_ts, dataclasses.replace(state)))

    def no_training(job: TrainingJob) -> None:  # the model is given; never retrain here
        raise AssertionError("replay pipeline asked for cold-start training")

    clock: DataClockRetrainer | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if retrain:
        if detector.cannot_save:
            raise DataError(
                f"retraining in replay needs a detector that can be saved: {detector.type_key} "
                f"models cannot ({detector.cannot_save})"
            )
        scratch = tempfile.TemporaryDirectory(prefix="sentinel-replay-")
        clock = DataClockRetrainer(
            config.model_copy(update={"state_dir": Path(scratch.name)}),
            torch_device,
            start_ts=float(data.timestamps[min(train_rows, rows - 1)]),
            initial=[detector],
            numpy_scoring=numpy_scoring,
        )
        clock.seed(
            [
                Reading(stream.name, device, float(data.timestamps[i]), tuple(map(float, v)))
                for i, v in enumerate(data.values[:train_rows])
                if i not in data.refused
            ]
        )

    batches: list[WriteBatch] = []
    pipeline = Pipeline(
        config,
        sink=batches.append,
        request_training=no_training,
        models={s.name: (detector if s.name == stream.name else None) for s in config.streams},
        observer=observe,
        tap=clock.tap if clock is not None else None,
    )
    # The training rows warm the device's threshold, spike memory and constant check
    # through the pipeline's own warm-up, as the daemon's cold start does with the rows
    # its first model was trained on (sentinel.worker.warmup).
    warm = min(train_rows, config.cold_start.warm_readings)
    if warm > 0:
        pipeline.warm_up(
            stream.name,
            [
                Reading(stream.name, device, float(data.timestamps[i]), tuple(map(float, v)))
                for i, v in zip(
                    range(train_rows - warm, train_rows),
                    data.values[train_rows - warm : train_rows],
                    strict=True,
                )
                if i not in data.refused
            ],
        )
    anomalous = 0
    label_names = list(data.carried)
    # Rows are written as they are judged, then their alert column once every alert's span
    # is known (AlertRows): a second pass over a scratch file, so memory stays flat.
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "timestamp",
                *data.features,
                "score",
                "threshold",
                "is_anomaly",
                "check",
                "alert_id",
                *label_names,
            ]
        )
        bar = _progress(rows, show_progress)
        shown = _State()
        start = 0
        while start < rows:
            stop = min(start + _BATCH, rows)
            if start < train_rows:
                stop = min(stop, train_rows)  # written unscored, never fed
            else:
                if clock is not None:
                    # End the pass at the row where a scheduled run fires, so that the new
                    # model scores from the next row on, as if the clock ticked every row.
                    fire = clock.next_fire
                    for i in range(start, stop):
                        if data.timestamps[i] >= fire:
                            stop = i + 1
                            break
                readings = tuple(
                    Reading(stream.name, device, float(data.timestamps[i]), tuple(map(float, v)))
                    for i, v in zip(range(start, stop), data.values[start:stop], strict=True)
                    if i not in data.refused
                )
                # A row whose reading the daemon would refuse is refused here: counted by its
                # reason, never fed, its row written with the verdict in force.
                refused = (
                    tuple(
                        Rejected(data.refused[i], "replay", f"row {i + 2} ({_iso(ts)})")
                        for i, ts in zip(
                            range(start, stop), data.timestamps[start:stop], strict=True
                        )
                        if i in data.refused
                    )
                    if data.refused
                    else ()
                )
                batches.clear()
                last_ts = float(data.timestamps[stop - 1])
                pipeline.process(
                    [Delivery("replay", readings, refused, ack=None, received_at=last_ts)]
                )
                if clock is not None:
                    clock.tick(last_ts, pipeline.install_model)
            for i in range(start, stop):
                ts = float(data.timestamps[i])
                while said and said[0][0] <= ts:
                    shown = said.popleft()[1]
                scored = i >= train_rows and shown.score is not None
                anomalous += int(scored and shown.is_anomaly)
                writer.writerow(
                    [
                        _iso(ts),
                        *(f"{float(v):.6g}" for v in data.values[i]),
                        _number(shown.score if scored else None),
                        _number(shown.threshold if scored else None),
                        int(scored and shown.is_anomaly),
                        shown.check if scored and shown.is_anomaly else "",
                        "",  # alert_id: filled in below
                        *(data.carried[name][i] for name in label_names),
                    ]
                )
            if bar is not None:
                bar.update(stop - start)
            start = stop
        if bar is not None:
            bar.close()
    alert_rows.finish()
    _fill_alert_ids(partial, out, alert_rows.ids(data.timestamps, train_rows))
    runs = promoted = skipped = 0
    if clock is not None:
        runs = len(clock.outcomes)
        promoted = sum(o.status == "accepted" for _, o in clock.outcomes)
        skipped = sum(o.status == "skipped" for _, o in clock.outcomes)
        clock.close()
    if scratch is not None:
        scratch.cleanup()
    rejected = pipeline.rejections.as_dict()
    if rejected:
        print(f"replay: rows skipped by the pipeline: {rejected}", file=sys.stderr)
    return ReplaySummary(
        rows=rows,
        train_rows=train_rows,
        scored_windows=state.scored,
        anomalous_rows=anomalous,
        alerts=len(alerts),
        model_version=detector.version,
        seconds=round(time.monotonic() - started, 2),
        retrain_runs=runs,
        retrain_promoted=promoted,
        retrain_skipped=skipped,
    )


def _fill_alert_ids(partial: Path, out: Path, ids: Sequence[str]) -> None:
    """Copy ``partial`` to ``out`` with each data row's ``alert_id`` set from ``ids``."""
    with (
        partial.open(newline="", encoding="utf-8") as source,
        out.open("w", newline="", encoding="utf-8") as target,
    ):
        reader, writer = csv.reader(source), csv.writer(target)
        header = next(reader)
        column = header.index("alert_id")
        writer.writerow(header)
        for row, uid in zip(reader, ids, strict=True):
            row[column] = uid
            writer.writerow(row)
    os.unlink(partial)


def _progress(total: int, show: bool) -> Any:
    if not show or not sys.stderr.isatty():
        return None
    from sentinel.progress import progress_bar

    return progress_bar(total, "replay", "row")


def split_labels(text: str | None) -> Sequence[str]:
    """``"anomaly, changepoint"`` -> ``["anomaly", "changepoint"]``."""
    return [c.strip() for c in text.split(",") if c.strip()] if text else []
