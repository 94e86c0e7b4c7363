"""configure_logging: events below the level are dropped, the rest rendered as JSON."""

from __future__ import annotations

import io
import json
import logging

import structlog

from sentinel.logs import configure_logging


def test_events_below_the_level_are_dropped_and_the_rest_rendered() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level, saved_config = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging("warning", "json")
        stream = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        log = structlog.get_logger("sentinel.test")
        log.debug("quiet_debug", n=1)
        log.info("quiet_info", n=2)
        log.warning("loud_warning", n=3)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["event"], line["n"], line["level"]) for line in lines] == [
            ("loud_warning", 3, "warning")
        ]
        assert lines[0]["logger"] == "sentinel.test"
        assert "timestamp" in lines[0]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
