"""SIGHUP: reload the config file and apply what can change while running.

Live keys: ``threshold.*``, ``alerts.*``, ``spikes.*``, ``levels.*``, ``stuck.*``,
``noise.*``, ``periods.*``, ``relations.*``, ``logging.*`` and ``ingest.log_interval``. The
pipeline worker takes the new thresholds, spike, level, stuck, noise, period and relation
checks and alert rules
between two passes, like a
model swap. The stream list
(``streams``) is applied by restarting the components inside the process
(``ReloadPlan.restart_streams``): everything in flight is drained and committed as on a stop,
and the MQTT session resumes, so nothing is lost and the process keeps running. Every other
key (the broker, the database, windows, the model, health, ...) needs a real restart: a
reload that changes one logs it as ``config_reload_needs_restart`` and keeps the running
value. A file that does not load or validate is refused, and the daemon carries on with the
config it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentinel.config import SentinelConfig

__all__ = ["LIVE_KEYS", "ReloadPlan", "plan_reload"]

# Dotted key prefixes that take effect without a restart.
LIVE_KEYS = (
    "threshold.",
    "alerts.",
    "spikes.",
    "levels.",
    "stuck.",
    "noise.",
    "periods.",
    "relations.",
    "logging.",
    "ingest.log_interval",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Sections become dotted keys; lists (the streams) stay whole values."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return {k.removesuffix("."): v for k, v in flat.items()}


def _is_live(key: str) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in LIVE_KEYS)


@dataclass(frozen=True)
class ReloadPlan:
    config: SentinelConfig  # the running config with the live keys taken from the file
    applied: dict[str, tuple[Any, Any]]  # key -> (old, new)
    needs_restart: dict[str, tuple[Any, Any]]
    # The file changes the stream list: ``config`` with the new streams, to be applied by
    # restarting the components in-process. None when the streams did not change.
    restart_streams: SentinelConfig | None = None

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def plan_reload(running: SentinelConfig, loaded: SentinelConfig) -> ReloadPlan:
    """What a reload from ``loaded`` changes in ``running``; raises ValueError (pydantic's
    ValidationError) if the live keys do not fit the rest of the running config."""
    old = _flatten(running.model_dump(mode="json"))
    new = _flatten(loaded.model_dump(mode="json"))
    diff = {
        k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
    }
    applied = {k: v for k, v in sorted(diff.items()) if _is_live(k)}
    streams_changed = diff.pop("streams", None)
    needs_restart = {k: v for k, v in sorted(diff.items()) if not _is_live(k)}
    data = running.model_dump()
    fresh = loaded.model_dump()
    live = (
        "threshold",
        "alerts",
        "spikes",
        "levels",
        "stuck",
        "noise",
        "periods",
        "relations",
        "logging",
    )
    for section in live:
        data[section] = fresh[section]
    data["ingest"]["log_interval"] = fresh["ingest"]["log_interval"]
    config = SentinelConfig.model_validate(data)
    restart = None
    if streams_changed is not None:
        restart = SentinelConfig.model_validate({**data, "streams": fresh["streams"]})
    return ReloadPlan(config, applied, needs_restart, restart)
