"""Per-minute score history: a pass's verdicts folded into one bucket per device and minute.

The pipeline hands the buckets to the writer in the pass's ``WriteBatch``, so they commit in
the transaction that records the readings behind them (``sentinel.store.history``): a
reading the broker redelivers after a crash is a duplicate the daemon skips, and its window
is never counted twice (issue #25).
"""

from __future__ import annotations

import math

from sentinel.records import ScoreBucket, Verdict

__all__ = ["BUCKET_SECONDS", "HistoryBuckets"]

BUCKET_SECONDS = 60
_RATIO_CAP = 1e30  # a threshold of 0 (or a non-finite ratio) stands in as this


class HistoryBuckets:
    """Collects one pass's verdicts; ``drain()`` returns them as buckets and starts over.

    Per window a dict lookup and a few comparisons: replay, which runs the same pass, pays
    that and no more (docs/BENCHMARKS.md, *Score history*).
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        # (stream, device, minute) -> [windows, anomalous, max_score, threshold, max_ratio]
        self._open: dict[tuple[str, str, int], list[float]] = {}

    def add(self, verdict: Verdict) -> None:
        window = verdict.score.window
        minute = int(window.end_ts // BUCKET_SECONDS) * BUCKET_SECONDS
        score, threshold = verdict.score.value, verdict.threshold
        ratio = score / threshold if threshold > 0 else _RATIO_CAP
        if not math.isfinite(ratio):
            ratio = _RATIO_CAP
        key = (window.stream, window.device, minute)
        acc = self._open.get(key)
        if acc is None:
            self._open[key] = [1, int(verdict.is_anomaly), score, threshold, ratio]
            return
        acc[0] += 1
        acc[1] += verdict.is_anomaly
        if score > acc[2]:
            acc[2], acc[3] = score, threshold
        if ratio > acc[4]:
            acc[4] = ratio

    def drain(self) -> tuple[ScoreBucket, ...]:
        if not self._open:
            return ()
        buckets = tuple(
            ScoreBucket(
                stream=stream,
                device=device,
                start=minute,
                windows=int(acc[0]),
                anomalous=int(acc[1]),
                max_score=float(acc[2]),
                threshold=float(acc[3]),
                max_ratio=float(acc[4]),
            )
            for (stream, device, minute), acc in self._open.items()
        )
        self._open = {}
        return buckets
