"""Judging scored windows: thresholds, re-baselining, spike and level checks, alert lifecycle."""

from __future__ import annotations

__all__: list[str] = []
