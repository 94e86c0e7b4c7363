"""The REST API under /api/v1, with /healthz and /metrics, served by the daemon (issue #25)."""

from __future__ import annotations

from sentinel.api.app import build_app
from sentinel.api.context import ApiContext

__all__ = ["ApiContext", "build_app"]
