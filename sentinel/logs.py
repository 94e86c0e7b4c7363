"""structlog set-up (readable lines on a terminal, JSON lines under systemd or in files), and
a throttle for log lines a repeating failure would flood."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

import structlog

__all__ = ["Throttle", "configure_logging"]


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Route structlog and the standard library's logging through one renderer."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        # Below the level an event is dropped first, before the processors stamp and name
        # it: the worker logs a debug line per window of an open alert (issue #23).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a cached module-level logger keeps the processors of the first
        # configuration it saw, so a later configure_logging (a SIGHUP reload changing the
        # level, or structlog.testing.capture_logs in tests) would not reach it. Sentinel
        # logs per event, never per reading, so the lookup costs nothing that matters.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho and alembic are chatty at INFO; their warnings still come through.
    for noisy in ("alembic", "paho", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@dataclass
class Throttle:
    """Lets one event per key through every ``interval`` seconds and counts the rest, for
    log lines that a failure repeated on every message or pass would otherwise flood."""

    interval: float
    clock: Callable[[], float] = time.monotonic
    _last: dict[Hashable, float] = field(default_factory=dict)
    _suppressed: Counter[Hashable] = field(default_factory=Counter)

    def allow(self, key: Hashable) -> int | None:
        """None: stay quiet. Else log now; the number is how many were held back since."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] += 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
