"""Where a kept replay's false alarms lie: by the check that raised them and by their
position against the labelled fault, per file and in total.

Reads the CSVs ``detection_suite.py --keep DIR`` (or ``skab.py --keep``) writes: each row's
``is_anomaly``, ``check`` (``score``, ``spike:F``, ``level:F``, ``constant:F``, joined by
``+``) and its label ``anomaly``. A false row is anomalous but unlabelled; it is *before*
the file's first labelled row, in the *tail* (within ``--tail`` rows after a labelled one:
a window still holding fault readings), or *after* (later than that). Rows raised by the
judge checks alone (no ``score``) are also counted by feature. docs/BENCHMARKS.md,
"Lasting offsets", used it to find that the level check's false rows on SKAB lie mostly
after the faults' ends.

    .venv/bin/python benchmarks/false_rows.py KEEP_DIR [--glob 'lstm_forecast-*.csv'] [--tail 32]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

POSITIONS = ("before", "tail", "after")


def check_kind(check: str) -> str:
    """``score`` when the model's score is among the reasons, else the judge checks that
    raised the row, without their features (``level``, ``spike+level``)."""
    parts = [p for p in check.split("+") if p]
    if not parts or "score" in parts:
        return "score"
    return "+".join(sorted({p.split(":", 1)[0] for p in parts}))


def false_rows(
    rows: Iterable[Mapping[str, str]], tail: int
) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """(check kind, position) -> false rows; and judge-only false rows by ``check:feature``."""
    by_kind: Counter[tuple[str, str]] = Counter()
    by_feature: Counter[str] = Counter()
    last_labelled: int | None = None
    for i, row in enumerate(rows):
        if float(row.get("anomaly") or 0) > 0:
            last_labelled = i
            continue
        if row.get("is_anomaly") != "1":
            continue
        kind = check_kind(row.get("check") or "")
        if last_labelled is None:
            where = "before"
        elif i - last_labelled <= tail:
            where = "tail"
        else:
            where = "after"
        by_kind[(kind, where)] += 1
        if kind != "score":
            by_feature.update(p for p in (row.get("check") or "").split("+") if p)
    return by_kind, by_feature


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keep", type=Path, help="a --keep folder of replay CSVs")
    ap.add_argument("--glob", default="lstm_forecast-*.csv", help="which CSVs (SKAB's)")
    ap.add_argument("--tail", type=int, default=32, help="rows after a fault that are its tail")
    args = ap.parse_args()
    files = sorted(args.keep.glob(args.glob))
    if not files:
        ap.error(f"{args.keep}: no {args.glob}")
    total: Counter[tuple[str, str]] = Counter()
    features: Counter[str] = Counter()
    print("| file | false rows | by check, position |\n|---|---|---|")
    for path in files:
        with path.open(newline="") as handle:
            by_kind, by_feature = false_rows(csv.DictReader(handle), args.tail)
        total.update(by_kind)
        features.update(by_feature)
        detail = ", ".join(f"{k} {w} {n}" for (k, w), n in sorted(by_kind.items()))
        print(f"| {path.stem} | {sum(by_kind.values())} | {detail} |")
    print("\n| check | " + " | ".join(POSITIONS) + " |\n|---|---|---|---|")
    for kind in sorted({k for k, _ in total}):
        print(f"| {kind} | " + " | ".join(str(total[(kind, w)]) for w in POSITIONS) + " |")
    print(
        "\njudge-only false rows by reason: "
        + ", ".join(f"{f} {n}" for f, n in features.most_common())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
