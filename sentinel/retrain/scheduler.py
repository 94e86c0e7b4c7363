"""When to retrain: one APScheduler job per stream, on an interval or a crontab line.

The job only queues a request with the ``Retrainer``; the run itself happens there. Its
options are chosen on purpose:

* ``misfire_grace_time`` from the config (default an hour): APScheduler's default of 1 s
  silently skips a run that starts a little late -- a busy daemon, a suspended machine;
* ``coalesce=True``: runs missed while the daemon was down or busy become one run, not a
  burst of identical ones;
* ``max_instances=1``: never two runs of one stream at once (the Retrainer also refuses a
  second request for a stream already queued or training).

APScheduler's job store lives in memory, so each stream's next run time is also kept in
``<state_dir>/retrain_schedule.json``, rewritten (atomically) whenever a job fires: a
restart resumes the countdown where it was instead of starting a new one -- with the
default ``every`` of a day, a box restarted daily would otherwise never retrain (issue
#19). A run that fell due while the daemon was down runs once at start. A changed
schedule (``every`` or ``cron``) starts afresh.

``trigger_for`` is shared with replay, which asks the same trigger for its next fire time
in the data's own clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sentinel.atomic import write_atomically
from sentinel.config import RetrainConfig

__all__ = ["SCHEDULE_FILE", "RetrainScheduler", "schedule_period", "trigger_for"]

log = structlog.get_logger(__name__)

SCHEDULE_FILE = "retrain_schedule.json"  # in the state directory


def trigger_for(config: RetrainConfig, start: datetime | None = None) -> BaseTrigger:
    """The schedule. ``start``: when the clock starts (the daemon: its start; replay: its
    first timestamp); the first interval run comes one interval after it."""
    if config.cron is not None:
        return CronTrigger.from_crontab(config.cron, timezone="UTC")
    first = None if start is None else start + timedelta(seconds=config.every)
    return IntervalTrigger(seconds=config.every, start_date=first, timezone="UTC")


def schedule_period(config: RetrainConfig, now: datetime | None = None) -> float:
    """Seconds between two runs: ``every``, or for ``cron`` the gap between its next two
    fire times (daemons sharing a registry run once per period: ``sentinel.retrain.lease``)."""
    if config.cron is None:
        return config.every
    trigger = trigger_for(config)
    first = trigger.get_next_fire_time(None, now or _utcnow())
    second = (
        trigger.get_next_fire_time(first, first + timedelta(seconds=1))
        if first is not None
        else None
    )
    if first is None or second is None:
        return config.every
    gap: timedelta = second - first
    return gap.total_seconds()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RetrainScheduler:
    """Calls ``request(stream, "schedule")`` for every stream on the configured schedule;
    keeps the next run times in ``path``. ``now``: the clock the first runs are counted
    from (APScheduler fires on the real one)."""

    def __init__(
        self,
        config: RetrainConfig,
        streams: list[str],
        request: Callable[[str, str], object],
        path: Path,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._config = config
        self._streams = streams
        self._request = request
        self._path = path
        self._now = now
        self._save_lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        now = self._now()
        saved = self._load()
        scheduler = BackgroundScheduler(timezone="UTC")
        for stream in self._streams:
            trigger = trigger_for(self._config, start=now)
            due = saved.get(stream)
            if due is not None and due < now:
                log.info("retrain_missed_while_down", stream=stream, due=due.isoformat())
            scheduler.add_job(
                self._request,
                trigger,
                args=(stream, "schedule"),
                id=f"retrain-{stream}",
                name=f"retrain {stream}",
                misfire_grace_time=int(self._config.misfire_grace_time),
                coalesce=True,
                max_instances=1,
                # A saved time that has passed: one run now, not one per missed time.
                next_run_time=(
                    trigger.get_next_fire_time(None, now) if due is None else max(due, now)
                ),
            )
        # Both events come after APScheduler has moved the job to its next run time.
        scheduler.add_listener(
            lambda event: self._save(scheduler), EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES
        )
        self._save(scheduler)
        scheduler.start()
        self._scheduler = scheduler
        for job in scheduler.get_jobs():
            log.info(
                "retrain_scheduled",
                job=job.id,
                next_run=str(job.next_run_time),
                resumed=job.args[0] in saved,
            )

    def _schedule(self) -> str:
        """What the saved times were counted on; another schedule starts afresh."""
        cron = self._config.cron
        return f"cron {cron}" if cron is not None else f"every {self._config.every:g} s"

    def _load(self) -> dict[str, datetime]:
        """The saved next run per stream; {} when none is saved for this schedule. A file
        that cannot be read is reported and replaced, never fatal."""
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            schedule, runs = data["schedule"], data["next_run"]
            saved = {str(s): datetime.fromisoformat(t) for s, t in runs.items()}
            if any(t.tzinfo is None for t in saved.values()):
                raise ValueError("a next run time without a time zone")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning(
                "retrain_schedule_unreadable",
                path=str(self._path),
                error=str(err),
                action="counting from now; the file is rewritten",
            )
            return {}
        if schedule != self._schedule():
            log.info("retrain_schedule_changed", old=schedule, new=self._schedule())
            return {}
        return saved

    def _save(self, scheduler: BackgroundScheduler) -> None:
        runs = {
            job.args[0]: job.next_run_time.isoformat()
            for job in scheduler.get_jobs()
            if job.next_run_time is not None
        }
        text = json.dumps({"schedule": self._schedule(), "next_run": runs}, indent=2) + "\n"
        with self._save_lock:
            try:
                write_atomically(self._path, text)
            except OSError as err:
                log.error("retrain_schedule_unsaved", path=str(self._path), error=str(err))

    def next_run(self, stream: str) -> str | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(f"retrain-{stream}")
        return None if job is None or job.next_run_time is None else job.next_run_time.isoformat()

    def stop(self, timeout: float = 5.0) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
