"""Evidence: which readings of an anomalous window made it anomalous.

Why (issue #21, "an alert opens at the onset and closes when the evidence does"): a verdict
belongs to a window, and a reading stays in a device's windows long after it arrived -- the
forecaster's score averages the newest half of a 32-reading window, and the spike check
judges a reading in every window where it has neighbours. An alert spanning its first to
its last anomalous window therefore ran up to a window's length past a three-reading spike
(the synthetic ``periodic_actuation``: 29 rows in the alert for 3 labelled) and started at
the newest reading of the first window that showed the fault rather than at the fault.

So each anomalous verdict carries the time span of its evidence (``Verdict.evidence``):

* the score: of the feature whose mean error made the window's score, the fewest of the
  scored readings without which that mean would fall to the threshold -- the largest
  errors first, each replaced by the window's median error for that feature. A spike is
  one or two readings; a noise burst or a shape that is wrong throughout is all of them;
  an error under ``ECHO`` of the window's largest is never taken beside it (a fault's
  echo in the forecaster's context).
  A detector that cannot tell its readings apart (``Detector.step_ratios`` None: the
  autoencoder, whose reconstruction of a whole window moves with one faulty reading) gives the
  window's newest reading, as before;
* a spike: the spiking reading;
* a stuck hit: the frozen run, from the first repeat of its value to the newest reading;
* a relation hit: the newest of the fewest readings that carry the window's residual on its
  feature, chosen by the rule the score's are (``RelationHit.age``): the residual of a
  window mean is the mean of its readings' residuals, so a break that ended stays in the
  windows holding it for a window's length (server_metrics' runaway process was alerted 28
  readings past its end). Only the newest: where a break lies under the whole window, all
  its readings carry it and the first of them says nothing of when it began;
* a noise hit: the newest reading a step beyond the check's limit led to
  (``NoiseHit.age``): a window is rough while most of its steps are, up to half a window
  after a burst ends;
* a period hit: the end of the newest block of the period that differed from its nearest
  earlier one (``PeriodHit.age``, at most the window's oldest reading): a period holds a
  fault for a whole period, the windows judged anomalous for an eighth of one after it;
* a constant hit: the newest reading away from the feature's accepted values
  (``ConstantHit.age``): a window holding any such reading is anomalous, for up to a
  window's length after a flag is back;
* a level hit: the window's newest reading (its statistic is the window's, not one
  reading's); a shift's (``sentinel.judge.shifts``), the first reading of the step
  (``LevelHit.age``), so a step is dated to itself however many windows hold it.

The alert tracker takes an alert's start from its first anomalous window's evidence (never
before the first reading after the device's last normal window: ``onset``) and its end
from the latest evidence (``sentinel.judge.alerts``), and replay's alert rows follow.
Windows that only carry evidence already seen keep an alert open -- they are still
anomalous -- but no longer stretch its span.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sentinel.records import Verdict

__all__ = ["carrying_readings", "evidence", "onset", "score_feature"]

FloatArray = npt.NDArray[np.float64]
_CAP = 1e30

# A reading whose error is under this share of its window's largest is never evidence
# beside it. The ratios are squared errors, so this is a tenth in amplitude. A forecaster
# whose context held a fault predicts the readings after it badly too: after the synthetic
# daily_pulse's 10-reading pulse at 1.5x the usual power, the drop's error is 69,000 times
# normal and the next readings' 15-80 times -- enough to keep a window anomalous on their
# own, and all of them were taken as evidence, so the alert ran 10 readings past the pulse
# (docs/BENCHMARKS.md, "Echoes of a fault in the forecaster's context"). Errors of one
# order, as a noise burst or a shape wrong throughout give, are all candidates still; and
# once the fault leaves the scored readings the echo is judged on its own again.
ECHO = 0.01


def carrying_readings(ratios: FloatArray, threshold: float) -> tuple[int, int]:
    """First and last index into ``ratios`` (S,), one feature's per-reading errors whose mean
    is above ``threshold``, of the fewest readings that carry that excess: the largest are
    replaced by the median until the mean is at most ``threshold``. Only readings whose
    error is at least ``ECHO`` of the window's largest are candidates (see ``ECHO``)."""
    count = len(ratios)
    median = float(np.median(ratios))
    order = np.argsort(-ratios, kind="stable")
    order = order[ratios[order] >= ECHO * float(ratios[order[0]])]
    excess = float(ratios.sum()) - threshold * count
    taken = count
    for k, i in enumerate(order):
        excess -= float(ratios[i]) - median
        if excess <= 0:
            taken = k + 1
            break
    chosen = order[:taken]
    return int(chosen.min()), int(chosen.max())


def _finite(ratios: FloatArray) -> FloatArray:
    # a window holding non-finite readings: its worst errors are as bad as it gets
    return np.nan_to_num(ratios, nan=_CAP, posinf=_CAP, neginf=0.0)


def score_feature(ratios: FloatArray) -> int:
    """The feature whose mean error made a window's score: ``ratios`` (S, F), its per-reading
    errors (``Detector.step_ratios``)."""
    return int(_finite(ratios).mean(axis=0).argmax())


def evidence(verdict: Verdict, ratios: FloatArray | None) -> tuple[float, float]:
    """The (first, last) timestamps of what made anomalous ``verdict`` anomalous;
    ``ratios``: its window's (S, F) per-reading errors (``Detector.step_ratios``) when its
    score is above its threshold, else None."""
    window = verdict.score.window
    length = len(window.values)
    newest = window.end_ts
    spans: list[tuple[float, float]] = []
    if verdict.score.value > verdict.threshold:
        if ratios is None or ratios.size == 0:
            spans.append((newest, newest))
        else:
            ratios = _finite(ratios)
            feature = score_feature(ratios)
            first, last = carrying_readings(ratios[:, feature], verdict.threshold)
            offset = length - len(ratios)  # the scored readings are the newest S
            spans.append((window.time_of(offset + first), window.time_of(offset + last)))
    spans.extend((at, at) for at in _exact_onsets(verdict))
    for hit in (verdict.relation, verdict.noise, verdict.constant, verdict.period):
        if hit is not None:
            at = newest if hit.age is None else window.time_of(length - 1 - hit.age)
            spans.append((at, at))
    level = verdict.level
    if level is not None and level.age is not None:
        spans.append((window.time_of(length - 1 - level.age),) * 2)
    elif level is not None or not spans:
        spans.append((newest, newest))
    if verdict.stuck is not None:
        spans.append((newest, newest))
    return min(s for s, _ in spans), max(e for _, e in spans)


def _exact_onsets(verdict: Verdict) -> list[float]:
    """The onsets a check beside the score knows to the reading: a spike's reading, and the
    first repeat of a frozen channel's value."""
    window = verdict.score.window
    length = len(window.values)
    out = []
    if verdict.spike is not None:
        out.append(window.time_of(length - 1 - verdict.spike.age))
    if verdict.stuck is not None:
        out.append(window.time_of(max(0, length - verdict.stuck.run + 1)))
    return out


def onset(run: list[Verdict], normal_end: float) -> float:
    """When an alert opened by the anomalous verdicts ``run`` started: their earliest
    evidence, but never at or before ``normal_end``, the newest reading of the device's last
    window judged normal -- a reading that window held did not make it anomalous, so an
    error spread over the readings before a fault (the score's evidence may reach back
    into them) does not move the onset ahead of it. A spike's reading and a frozen channel's
    first repeat are the exceptions: the spike check judges a reading only once it has newer
    neighbours, the stuck check a run only once it is long enough, so the windows that held
    them before were normal for want of that."""
    first = run[0].score.window
    start = min((v.evidence or (v.score.window.end_ts,) * 2)[0] for v in run)
    if start <= normal_end:
        length = len(first.values)
        after = [t for i in range(length) if (t := first.time_of(i)) > normal_end]
        start = min(after, default=first.end_ts)
    return min([start, *(at for v in run for at in _exact_onsets(v))])
