"""Noiseless and near-noiseless daily shapes, as public benchmarks' artificial series are.

NAB's artificial series (a daily square wave every 5 minutes for 14 days, with and without
noise, a flat line, pure noise; anomalies that jump the day's high level up or down, hold
it flat in the middle, or leave a day without its rise) are judged with a short training
(NAB's 15 % probation). None of the development suite's classes is noiseless, and a
noiseless series is where a device's learnt threshold moves furthest from its model's
calibration: the steps score the same every day while the windows between them score
near zero. The shapes are written here from those series' published descriptions, not
copied from any file; each seed draws the noise and the day of the anomaly.

For each shape and seed, replayed as ``sentinel replay`` replays a file (the default
config, retraining on its schedule in the data's time unless ``--no-retrain``): events hit
(an alert overlapping the label or opening within 32 readings after it), false alerts,
rows in alerts against rows labelled.

    .venv/bin/python benchmarks/artificial_shapes.py [--seeds 0 1 2 3 4] [--train-fraction 0.15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection_suite import GRACE, Suite, machine  # benchmarks/detection_suite.py

from sentinel.logs import configure_logging
from sentinel.offline.suite import id_events, score_series

DAY = 288  # readings a day at 5 minutes
DAYS = 14
ROWS = DAY * DAYS
INTERVAL = 300.0
EPOCH = 1_396_310_400.0  # 2014-04-01, as the originals
LOW, HIGH = 20.0, 80.0


def _square(noise: float, rng: np.random.Generator) -> np.ndarray:
    """Low at night, high from 07:12 to 16:48, every day; ``noise`` sigma on top."""
    phase = (np.arange(ROWS) % DAY) / DAY
    values = np.where((phase >= 0.3) & (phase < 0.7), HIGH, LOW)
    return values + noise * rng.standard_normal(ROWS)


def _smooth(rng: np.random.Generator) -> np.ndarray:
    """A noiseless daily rise and fall (a square root of a sine), flat at night."""
    phase = (np.arange(ROWS) % DAY) / DAY
    day = (phase > 0.25) & (phase < 0.75)
    rise = np.sqrt(np.clip(np.sin(np.pi * (phase - 0.25) / 0.5), 0, 1))
    return np.asarray(LOW + (HIGH - LOW) * rise * day, dtype=np.float64)


def _anomaly_day(rng: np.random.Generator) -> int:
    return int(rng.integers(9, 12))


def _high(values: np.ndarray, start: int, end: int) -> np.ndarray:
    return (values[start:end] > (LOW + HIGH) / 2).nonzero()[0] + start


Shape = Callable[[np.random.Generator], tuple[np.ndarray, list[tuple[int, int]]]]


def flatline(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return np.full(ROWS, 42.0), []


def smooth_no_noise(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _smooth(rng), []


def square_no_noise(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _square(0.0, rng), []


def square_small_noise(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _square(1.0, rng), []


def noisy(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return 50.0 + 10.0 * rng.standard_normal(ROWS), []


def _jump(rng: np.random.Generator, by: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    values = _square(1.0, rng)
    day = _anomaly_day(rng) * DAY
    high = _high(values, day, day + DAY)
    values[high] += by
    return values, [(int(high[0]), int(high[-1]) + 1)]


def jumps_up(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _jump(rng, 40.0)


def jumps_down(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return _jump(rng, -30.0)


def no_jump(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    values = _square(1.0, rng)
    day = _anomaly_day(rng) * DAY
    high = _high(values, day, day + DAY)
    values[high] = LOW + rng.standard_normal(len(high))
    return values, [(int(high[0]), int(high[-1]) + 1)]


def flat_middle(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    values = _square(1.0, rng)
    day = _anomaly_day(rng) * DAY
    values[day : day + DAY] = (LOW + HIGH) / 2 + rng.standard_normal(DAY)
    return values, [(day, day + DAY)]


SHAPES: dict[str, Shape] = {
    "flatline": flatline,
    "smooth_no_noise": smooth_no_noise,
    "square_no_noise": square_no_noise,
    "square_small_noise": square_small_noise,
    "noisy": noisy,
    "jumps_up": jumps_up,
    "jumps_down": jumps_down,
    "no_jump": no_jump,
    "flat_middle": flat_middle,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--train-fraction", type=float, default=0.15, help="of the rows (NAB: 0.15)")
    ap.add_argument("--no-retrain", action="store_true", help="keep the first model")
    ap.add_argument("--keep", type=Path, help="keep every replay output here")
    args = ap.parse_args()
    configure_logging("error", "console")  # skipped retrainings are expected here
    print(f"machine: {machine()}")
    print(f"command: .venv/bin/python benchmarks/artificial_shapes.py {' '.join(sys.argv[1:])}\n")
    train_rows = int(ROWS * args.train_fraction)
    print(
        f"{ROWS} rows a series (5 min, {DAYS} days), the first {train_rows} train; "
        f"{'no retraining' if args.no_retrain else 'retraining in the data time'}\n"
    )
    print("| shape | events hit | false alerts (by seed) | rows in alerts / labelled |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        suite = Suite({}, Path(tmp), args.keep, retrain=not args.no_retrain)
        for name, shape in SHAPES.items():
            hit = events = 0
            false: list[int] = []
            rows_in = labelled = 0
            for seed in args.seeds:
                values, spans = shape(np.random.default_rng(seed))
                labels = np.zeros(ROWS, dtype=np.int8)
                for start, end in spans:
                    labels[start:end] = 1
                times = EPOCH + INTERVAL * np.arange(ROWS)
                rows = suite.replay_rows(
                    f"{name}-{seed}", ("value",), values.reshape(-1, 1), times, train_rows
                )
                alert_spans, ids = id_events([r["alert_id"] for r in rows])
                score = score_series(labels, alert_spans, GRACE, ids)
                hit += score.detected
                events += score.events
                false.append(score.false_alerts)
                rows_in += score.rows_flagged
                labelled += score.rows_labelled
            ratio = (
                f"{rows_in}/{labelled} ({rows_in / labelled:.2f})" if labelled else f"{rows_in}/0"
            )
            print(
                f"| {name} | {hit}/{events} | {sum(false)} ({', '.join(map(str, false))}) "
                f"| {ratio} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
