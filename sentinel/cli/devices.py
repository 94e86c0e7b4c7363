"""``sentinel devices list|reset``: what the daemon knows of each device, and undoing it.

A device's stored ``last_ts`` decides which of its readings are taken: one far-future
timestamp (accepted before ``ingest.max_future_skew`` existed, or while the box's clock was
far behind) makes every genuine reading after it ``out_of_order`` (issue #19). ``list``
shows that state and flags what is ahead of the clock; ``reset`` forgets it. With a daemon
running, the reset goes through its control socket (``<state_dir>/control.sock``): the
daemon holds ``last_ts`` in memory too, and its writer deletes the stored row in order with
the progress it commits, so nothing it writes afterwards brings the old value back. With
no daemon answering, the row is deleted here. Either way a ``device_reset`` audit row
records what was there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sentinel.config import IngestConfig, SentinelConfig
from sentinel.errors import ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel.store import AlertStore, DeviceRecord

__all__ = ["add_devices_commands"]

AddArgs = Callable[[argparse.ArgumentParser], None]
Loader = Callable[[argparse.Namespace], SentinelConfig]
Opener = Callable[[argparse.Namespace], "AlertStore"]

_COLUMNS = ("stream", "device", "last reading", "readings", "updated", "open alerts", "note")
_DEFAULT_SKEW = IngestConfig.model_fields["max_future_skew"].default
# Devices per control-socket request: its lines are read up to 64 KiB, names up to 128 bytes.
_PER_REQUEST = 200


def _time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (epoch s)"


def _row(record: DeviceRecord, horizon: float) -> dict[str, str]:
    return {
        "stream": record.stream,
        "device": record.device,
        "last reading": _time(record.last_ts),
        "readings": str(record.readings),
        "updated": record.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        "open alerts": str(record.open_alerts),
        "note": "ahead of the clock: reset it" if record.last_ts > horizon else "",
    }


def _cmd_list(open_store: Opener, load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        skew = _DEFAULT_SKEW if args.database else load(args).ingest.max_future_skew
        store = open_store(args)
        try:
            records = store.devices(args.stream)
        finally:
            store.close()
        horizon = time.time() + skew
        if args.format == "json":
            out = [{**r.to_dict(), "ahead_of_clock": r.last_ts > horizon} for r in records]
            json.dump(out, sys.stdout, indent=2)
            print()
            return 0
        if not records:
            print("no devices")
            return 0
        rows = [_row(r, horizon) for r in records]
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS}
        print("  ".join(c.upper().ljust(widths[c]) for c in _COLUMNS).rstrip())
        for row in rows:
            print("  ".join(row[c].ljust(widths[c]) for c in _COLUMNS).rstrip())
        return 0

    return run


def _reset(
    config: SentinelConfig, store: AlertStore, stream: str, devices: list[str], note: str | None
) -> tuple[list[str], str]:
    """Reset through the running daemon if one answers, else in the database; returns the
    devices the daemon held and where it was done. SentinelError if the daemon refused."""
    from sentinel.daemon.control import CONTROL_SOCKET, send_command

    held: list[str] = []
    for start in range(0, len(devices), _PER_REQUEST):
        chunk = devices[start : start + _PER_REQUEST]
        request = {"command": "reset_devices", "stream": stream, "devices": chunk, "note": note}
        path = config.state_dir / CONTROL_SOCKET
        try:
            answer = send_command(path, request)
        except ConnectionError:
            # No daemon (any more): the rest is done here, where nothing can undo it.
            store.reset_devices(stream, devices[start:], note=note)
            where = "in the database (no running daemon answered)"
            return held, where if start == 0 else f"partly in the running daemon, then {where}"
        except OSError as err:  # a daemon is there, but out of reach: do not go around it
            raise SentinelError(
                f"cannot reach the daemon's control socket {path}: {err} (run as the "
                "daemon's user; a reset it did not answer stays queued in it)"
            ) from err
        if not answer.get("ok"):
            raise SentinelError(f"the running daemon refused the reset: {answer.get('error')}")
        held += answer.get("held", [])
    return held, "in the running daemon and its database"


def _cmd_reset(load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from sentinel.store import AlertStore

        config = load(args)
        if args.stream not in {s.name for s in config.streams}:
            names = ", ".join(s.name for s in config.streams)
            raise ConfigError(f"no stream {args.stream!r} in the config (streams: {names})")
        if not args.devices and not args.future:
            raise ConfigError("name the devices to reset, or give --future")
        store = AlertStore(config.database_url)
        store.open(create=False)
        try:
            store.check_schema()
            devices = list(dict.fromkeys(args.devices))
            if args.future:
                horizon = time.time() + config.ingest.max_future_skew
                named = set(devices)
                ahead = store.devices(args.stream, ahead_of=horizon)
                devices += [r.device for r in ahead if r.device not in named]
            if not devices:
                print(f"stream {args.stream}: no device is ahead of the clock; nothing to reset")
                return 0
            stored = store.device_progress(args.stream, devices)
            held, where = _reset(config, store, args.stream, devices, args.note)
        finally:
            store.close()
        known = {d for _, d in stored} | set(held)
        unknown = [d for d in devices if d not in known]
        done = len(devices) - len(unknown)
        print(
            f"stream {args.stream}: reset {done} device(s) {where}; their next readings are taken"
        )
        if unknown:
            print(f"no state stored or held for: {', '.join(unknown)}", file=sys.stderr)
        return 0 if done else 1

    return run


def add_devices_commands(
    commands: Any, db_args: AddArgs, config_arg: AddArgs, load: Loader, open_store: Opener
) -> None:
    devices = commands.add_parser(
        "devices", help="see and reset what the daemon knows of each device"
    )
    actions = devices.add_subparsers(dest="devices_command", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="each device's stored state: last reading, count, open alerts",
        description="Each device's stored state, by stream and name. NOTE flags a last "
        "reading ahead of the clock by more than ingest.max_future_skew: that device's "
        "genuine readings are dropped as out_of_order until it is reset.",
    )
    db_args(listing)
    listing.add_argument("--stream", metavar="S")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_cmd_list(open_store, load))

    reset = actions.add_parser(
        "reset",
        help="forget devices' last timestamps so that their next readings are taken",
        description="Delete devices' stored progress (last timestamp, reading count), with a "
        "device_reset audit row each. A running daemon is told through its control socket "
        "and forgets them in memory too; its thresholds and alerts for them stay.",
    )
    config_arg(reset)
    reset.add_argument("stream", metavar="STREAM")
    reset.add_argument("devices", nargs="*", metavar="DEVICE")
    reset.add_argument(
        "--future",
        action="store_true",
        help="every device of STREAM whose stored last reading is ahead of the clock by "
        "more than ingest.max_future_skew",
    )
    reset.add_argument("--note", metavar="TEXT", help="kept in the audit row")
    reset.set_defaults(func=_cmd_reset(load))
