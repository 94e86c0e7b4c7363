"""The pipeline worker: per-device order and windows, batched scoring, cold start, shadow models."""

from __future__ import annotations

__all__: list[str] = []
