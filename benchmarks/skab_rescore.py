"""Re-judge kept SKAB replay scores offline: seed ensembles, other thresholds, smoothing.

``benchmarks/skab.py --keep DIR`` keeps each file's replay output (score and threshold per
row). This script reads one or more such directories (one per model seed) and reports the
pooled point metrics of verdicts made differently from the same scores, on ``valve1/``
(where a search may look) and on all files:

* ``single`` / ``ensemble``: ``score / threshold > k`` for the first directory's model, and
  for the mean ratio over all directories' models;
* ``ewma``: the ratio smoothed over time (alpha) before the comparison;
* ``hysteresis``: open after O anomalous rows in a row (back-dated to the first), close
  after C normal ones, the closing tail counted (``tail``) or not.

    .venv/bin/python benchmarks/skab.py --detectors lstm_ae --keep /tmp/s0
    .venv/bin/python benchmarks/skab.py --detectors lstm_ae --set model.seed=1 --keep /tmp/s1
    .venv/bin/python benchmarks/skab_rescore.py /tmp/s0 /tmp/s1
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sentinel.offline.evaluation import PointMetrics, pooled_point_metrics

TRAIN_ROWS = 400

File = tuple[np.ndarray, np.ndarray]  # (ratios: (seeds, rows), labels: (rows,))


def load(dirs: list[Path], subsets: Iterable[str]) -> list[File]:
    """Per file: each seed's score / threshold over the test rows, and the labels."""
    files = []
    for first in sorted(dirs[0].glob("lstm_ae-*.csv")):
        if not any(f"-{s}-" in first.name for s in subsets):
            continue
        ratios = []
        for d in dirs:
            with (d / first.name).open() as handle:
                rows = list(csv.DictReader(handle))[TRAIN_ROWS:]
            score = np.array([float(r["score"] or 0.0) for r in rows])
            threshold = np.array([float(r["threshold"] or np.inf) for r in rows])
            ratios.append(score / threshold)
        labels = np.array([int(float(r["anomaly"])) for r in rows])
        files.append((np.array(ratios), labels))
    if not files:
        raise SystemExit(f"{dirs[0]}: no kept lstm_ae replay files")
    return files


def ewma(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    level = x[0]
    for i, v in enumerate(x):
        level = alpha * v + (1 - alpha) * level
        out[i] = level
    return out


def hysteresis(verdicts: np.ndarray, open_after: int, close_after: int, tail: bool) -> np.ndarray:
    pred = np.zeros_like(verdicts)
    run = normal = 0
    is_open = False
    last = -1
    for i, v in enumerate(verdicts):
        if not is_open:
            run = run + 1 if v else 0
            if run >= open_after:
                is_open, normal, last = True, 0, i
                pred[i - open_after + 1 : i + 1] = 1
            continue
        if v:
            pred[last : i + 1] = 1
            normal, last = 0, i
        else:
            normal += 1
            pred[i] = 1 if tail else 0
            if normal >= close_after:
                is_open, run = False, 0
    return pred


def single(ratios: np.ndarray, k: float) -> np.ndarray:
    out: np.ndarray = (ratios[0] > k).astype(int)
    return out


def ensemble(ratios: np.ndarray, k: float) -> np.ndarray:
    out: np.ndarray = (ratios.mean(axis=0) > k).astype(int)
    return out


def smoothed(ratios: np.ndarray, alpha: float, k: float) -> np.ndarray:
    return (ewma(np.minimum(ratios[0], 5.0), alpha) > k).astype(int)


def held(ratios: np.ndarray, open_after: int, close_after: int, tail: bool) -> np.ndarray:
    return hysteresis((ratios[0] > 1).astype(int), open_after, close_after, tail)


def score(files: list[File], predict: Callable[[np.ndarray], np.ndarray]) -> PointMetrics:
    return pooled_point_metrics((labels, predict(ratios)) for ratios, labels in files)


def line(name: str, m: PointMetrics) -> str:
    return f"| {name} | {m.f1:.3f} | {100 * m.far:.2f} | {100 * m.mar:.2f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", type=Path, nargs="+", help="skab.py --keep directories, one per seed")
    args = ap.parse_args()
    for label, subsets in (
        ("valve1/", ["valve1"]),
        ("all 34 files", ["valve1", "valve2", "other"]),
    ):
        files = load(args.dirs, subsets)
        print(
            f"\n{label}, {len(args.dirs)} seed(s)\n\n"
            "| verdict | F1 | FAR % | MAR % |\n|---|---|---|---|"
        )
        for k in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5):
            print(line(f"single, k {k}", score(files, partial(single, k=k))))
            if len(args.dirs) > 1:
                print(line(f"ensemble, k {k}", score(files, partial(ensemble, k=k))))
        for alpha in (0.5, 0.2, 0.1, 0.05):
            for k in (0.5, 0.65, 0.8, 1.0):
                m = score(files, partial(smoothed, alpha=alpha, k=k))
                print(line(f"ewma alpha {alpha}, k {k}", m))
        for o in (2, 3, 5):
            for c in (10, 30):
                for tail in (False, True):
                    m = score(files, partial(held, open_after=o, close_after=c, tail=tail))
                    print(line(f"hysteresis O {o} C {c}{' + tail' if tail else ''}", m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
