"""systemd's notify protocol (sd_notify(3)) over ``$NOTIFY_SOCKET``, without a dependency.

One datagram per message on a unix socket: ``READY=1`` once the daemon serves,
``WATCHDOG=1`` while it makes progress (``WatchdogSec=``), ``EXTEND_TIMEOUT_USEC=`` before
start-up work that may outlast ``TimeoutStartSec=`` (a migration that copies a table),
``RELOADING=1`` around a SIGHUP reload, ``STOPPING=1`` when it shuts down and
``STATUS=...`` for ``systemctl status``.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same
under a terminal, a container or a test.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

__all__ = ["Notifier", "watchdog_interval"]

log = structlog.get_logger(__name__)


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds of systemd's watchdog timeout for this process, or None when it is off.

    ``$WATCHDOG_USEC`` is set by systemd when ``WatchdogSec=`` is configured; when
    ``$WATCHDOG_PID`` is set too it must be our pid (sd_watchdog_enabled(3)).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """Sends notify messages to ``address`` (default ``$NOTIFY_SOCKET``); no-op without one."""

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        # A leading "@" names a socket in the abstract namespace (a leading NUL byte).
        self._address = ("\0" + address[1:]) if address and address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram; False when it could not be sent."""
        if not self._address:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(payload, self._address)
        except OSError as err:
            if not self._warned:  # once: a missing socket would otherwise flood the log
                self._warned = True
                log.warning("sd_notify_failed", socket=self._address, error=str(err))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float, status: str) -> bool:
        """Ask systemd for ``seconds`` more before the start (or stop) times out, from now
        (systemd 236+; older ones ignore it), saying why in ``STATUS``."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", f"STATUS={status}")

    def reloading(self) -> bool:
        # systemd 253+ (Type=notify-reload) wants the monotonic time with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text.replace(chr(10), ' ')}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
