"""A promoted model's shadow period: it scores live windows beside the active model before
it takes over, so that each device's threshold starts from live scores, not held-back ones.

Why: a challenger's held-back windows come from the period it trained around, so its scores
there are an interpolation. The readings after the swap are new (a day further into the
wear, a new season), and its scores on them run higher: thresholds seeded only from the
held-back windows start too tight and every swap brought a burst of false alerts
(docs/BENCHMARKS.md, "Retraining under slow concept drift"). In the shadow period the
challenger scores the same windows as the active model; the scores of the windows the
*active* model judged normal are what each device's threshold starts from at the swap, after
the held-back seeds. The active model decides every verdict until then.

Time is the readings' own (window end timestamps), so a replay does what the daemon does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sentinel.model import Detector
from sentinel.records import Verdict

__all__ = ["Shadow"]


@dataclass
class Shadow:
    """One stream's promoted model, scoring beside the active one until ``period`` seconds
    of readings have gone by."""

    detector: Detector
    period: float
    history: int  # most scores kept per device (the threshold's own history)
    seeds: Mapping[str, Sequence[float]] = field(default_factory=dict)
    started: float | None = None  # end timestamp of the first window it scored
    last: float | None = None
    windows: int = 0
    live: dict[str, list[float]] = field(default_factory=dict)

    def observe(self, verdicts: Sequence[Verdict]) -> None:
        """Score the windows the active model just judged; keep the scores of those it
        judged normal, per device."""
        if not verdicts:
            return
        values, _ = self.detector.score(np.stack([v.score.window.values for v in verdicts]))
        for verdict, value in zip(verdicts, values, strict=True):
            window = verdict.score.window
            if self.started is None:
                self.started = window.end_ts
            self.last = window.end_ts if self.last is None else max(self.last, window.end_ts)
            self.windows += 1
            if verdict.is_anomaly or not np.isfinite(value):
                continue
            scores = self.live.setdefault(window.device, [])
            scores.append(float(value))
            if len(scores) > 2 * self.history:
                del scores[: -self.history]

    @property
    def due(self) -> bool:
        return (
            self.started is not None
            and self.last is not None
            and self.last - self.started >= self.period
        )

    def threshold_seeds(self) -> dict[str, list[float]]:
        """Per device, oldest first: the held-back seeds, then the live scores -- the newest
        ``history`` of them together."""
        devices = set(self.seeds) | set(self.live)
        return {
            d: [*self.seeds.get(d, ()), *self.live.get(d, ())][-self.history :]
            for d in sorted(devices)
        }
