"""When to retrain: one APScheduler job per stream, on an interval or a crontab line.

The job only queues a request with the ``Retrainer``; the run itself happens there. Its
options are chosen on purpose:

* ``misfire_grace_time`` from the config (default an hour): APScheduler's default of 1 s
  silently skips a run that starts a little late -- a busy daemon, a suspended machine;
* ``coalesce=True``: runs missed while the daemon was down or busy become one run, not a
  burst of identical ones;
* ``max_instances=1``: never two runs of one stream at once (the Retrainer also refuses a
  second request for a stream already queued or training).

``trigger_for`` is shared with replay, which asks the same trigger for its next fire time
in the data's own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sentinel.config import RetrainConfig

__all__ = ["RetrainScheduler", "trigger_for"]

log = structlog.get_logger(__name__)


def trigger_for(config: RetrainConfig, start: datetime | None = None) -> BaseTrigger:
    """The schedule. ``start``: when the clock starts (replay: its first timestamp); the
    first interval run comes one interval after it (the daemon: after its own start)."""
    if config.cron is not None:
        return CronTrigger.from_crontab(config.cron, timezone="UTC")
    first = None if start is None else start + timedelta(seconds=config.every)
    return IntervalTrigger(seconds=config.every, start_date=first, timezone="UTC")


class RetrainScheduler:
    """Calls ``request(stream, "schedule")`` for every stream on the configured schedule."""

    def __init__(
        self,
        config: RetrainConfig,
        streams: list[str],
        request: Callable[[str, str], object],
    ) -> None:
        self._config = config
        self._streams = streams
        self._request = request
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        scheduler = BackgroundScheduler(timezone="UTC")
        for stream in self._streams:
            scheduler.add_job(
                self._request,
                trigger_for(self._config),
                args=(stream, "schedule"),
                id=f"retrain-{stream}",
                name=f"retrain {stream}",
                misfire_grace_time=int(self._config.misfire_grace_time),
                coalesce=True,
                max_instances=1,
            )
        scheduler.start()
        self._scheduler = scheduler
        for job in scheduler.get_jobs():
            log.info("retrain_scheduled", job=job.id, next_run=str(job.next_run_time))

    def next_run(self, stream: str) -> str | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(f"retrain-{stream}")
        return None if job is None or job.next_run_time is None else job.next_run_time.isoformat()

    def stop(self, timeout: float = 5.0) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
