"""The ``sentinel`` command line."""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from sentinel import __version__
from sentinel.config import SentinelConfig, StreamConfig, load_config
from sentinel.errors import ConfigError, SentinelError

if TYPE_CHECKING:
    from sentinel.offline.csvdata import CsvDialect
    from sentinel.records import RejectReason
    from sentinel.store import AlertRecord, AlertStore

__all__ = ["main", "parse_since"]

log = structlog.get_logger(__name__)

DEFAULT_CONFIG = "/etc/sentinel/sentinel.toml"
EXIT_USAGE = 2  # a bad config or command line, or no torch where a command needs it
# torch is not a package dependency (pyproject.toml): the commands that need it import it
# lazily, so the others work without it, and say this when it is missing.
NO_TORCH = (
    "sentinel: PyTorch is not installed: pip install torch==2.13.0 (CPU build; add "
    "--index-url https://download.pytorch.org/whl/cpu to skip the CUDA one), or on a Jetson "
    "NVIDIA's torch wheel for your JetPack (see README, Installing torch)"
)

# What the unit's UMask=0027 gives the service (deploy/sentinel.service), for every command
# outside systemd too: the state directory and the database, models, snapshots and
# reservoir it holds are created 0750 / 0640, never readable by every user of the box.
STATE_UMASK = 0o027

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d`` (ago) or an ISO 8601 time (naive means UTC)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a duration like 30m, 2h, 7d, or an ISO 8601 time"
        ) from err
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("SENTINEL_CONFIG") or DEFAULT_CONFIG)


_LEVELS = ("debug", "info", "warning", "error")


def _log_level(args: argparse.Namespace, configured: str = "info") -> str:
    """The daemon logs at ``logging.level``; any other command's answer is what it prints,
    so it logs warnings and errors only. ``-v`` shows info lines (debug if configured)."""
    level = _LEVELS.index(configured)
    if args.verbose:
        level = min(level, _LEVELS.index("info"))
    elif args.command != "run":
        level = max(level, _LEVELS.index("warning"))
    return _LEVELS[level]


def _load(args: argparse.Namespace) -> SentinelConfig:
    from sentinel.logs import configure_logging

    config = load_config(_config_path(args))
    configure_logging(_log_level(args, config.logging.level), config.logging.format)
    return config


# -- commands -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from sentinel.daemon.app import EXIT_OK, EXIT_RESTART, SentinelApp
    from sentinel.daemon.malloc import cap_malloc_arenas

    cap_malloc_arenas()  # before any of the daemon's threads allocate
    config = _load(args)
    # Scoring may never load torch (model.runtime), but the daemon trains its first model
    # and retrains: say so now, not when the first cold start fails.
    if importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path = Path(_config_path(args))
    current = [SentinelApp(config, config_path=path)]

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        log.info("signal_received", signal="SIGHUP")
        current[0].request_reload()  # only sets an event: the main loop reloads

    signal.signal(signal.SIGHUP, on_hangup)
    while True:
        app = current[0]
        result = app.run(stop)
        if result != EXIT_RESTART or app.restart_config is None or stop.is_set():
            return EXIT_OK if result == EXIT_RESTART else result
        # A reload changed the stream list: the same process, new components.
        current[0] = SentinelApp(app.restart_config, config_path=path)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    refusal = _daemon_refusal(config)
    if refusal is not None:
        print(f"{args.file}: {refusal}", file=sys.stderr)
        return 1
    streams = ", ".join(f"{s.name} ({s.topic}, {len(s.features)} features)" for s in config.streams)
    print(f"{args.file}: OK — {len(config.streams)} stream(s): {streams}")
    print(f"database: {json.dumps(config.redacted()['database']['url'])}")
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_nats_mappings(args: argparse.Namespace) -> int:
    """The subject mappings nats-server needs for the config's streams and partitions."""
    try:
        config = load_config(args.file)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    from sentinel.ingest.subjects import server_mappings

    mappings = server_mappings(config.nats, config.streams)
    print(
        f"# nats-server.conf: {config.nats.partitions} partitions of the streams in {args.file}"
        "\n# (the global account; put it inside an account's block for another one)"
    )
    print("mappings = {")
    for source, dest in mappings.items():
        print(f"  {json.dumps(source)}: {json.dumps(dest)}")
    print("}")
    return 0


def _daemon_refusal(config: SentinelConfig) -> str | None:
    """Why the daemon would refuse the config's detector, or None; None without torch too,
    where no detector runs at all (and ``run`` says so)."""
    try:
        from sentinel.model import daemon_refusal
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        return None
    return daemon_refusal(config.model.detector)


def _store(args: argparse.Namespace, *, migrating: bool = False) -> AlertStore:
    """The database a command reads or changes. Only ``migrate`` creates one; the others
    need the daemon's schema, at its newest revision, and say what to run when it is not."""
    from sentinel.store import AlertStore

    url = args.database if getattr(args, "database", None) else _load(args).database_url
    store = AlertStore(url)
    store.open(create=migrating)
    if not migrating:
        try:
            store.check_schema()
        except SentinelError:
            store.close()
            raise
    return store


def cmd_migrate(args: argparse.Namespace) -> int:
    store = _store(args, migrating=True)
    try:
        store.migrate()
    finally:
        store.close()
    print("database schema is up to date")
    return 0


_TABLE_COLUMNS = (
    "id",
    "status",
    "stream",
    "device",
    "started",
    "duration",
    "peak",
    "severity",
    "features",
)


def _format_row(record: AlertRecord) -> dict[str, str]:
    from sentinel.records import AlertStatus

    end = record.ended_at or record.updated_at
    duration = (end - record.started_at).total_seconds()
    features = ", ".join(f"{f.feature} {f.share:.0%}" for f in record.top_features)
    status = record.status.value
    if record.acknowledged_at is not None and record.status is not AlertStatus.ACKNOWLEDGED:
        status += "+ack"  # closed or resolved keep their status; the ack must still show
    return {
        "id": str(record.id),
        "status": status,
        "severity": record.severity.value,
        "stream": record.stream,
        "device": record.device,
        "started": record.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "duration": f"{duration:.0f}s",
        "peak": f"{record.peak_score / record.threshold:.1f}x" if record.threshold else "-",
        "features": features,
    }


def cmd_alerts_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        records = store.list_alerts(
            since=args.since,
            device=args.device,
            stream=args.stream,
            status=args.status,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.format == "json":
        json.dump([r.to_dict() for r in records], sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        rows = [r.to_dict() for r in records]
        fields = list(rows[0]) if rows else ["id"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            # Structured columns (top_features, reason) as JSON, never as a Python repr.
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
            )
    else:
        _print_table([_format_row(r) for r in records])
    return 0


def _print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("no alerts")
        return
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in _TABLE_COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in _TABLE_COLUMNS).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in _TABLE_COLUMNS).rstrip())


def cmd_alerts_show(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record = store.get_alert(args.id)
    finally:
        store.close()
    if record is None:
        print(f"no alert with id {args.id}", file=sys.stderr)
        return 1
    if args.format == "json":
        json.dump(record.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    end = record.ended_at or record.updated_at
    ratio = f" ({record.peak_score / record.threshold:.1f}x)" if record.threshold else ""
    fields = [
        ("alert", f"{record.id}  ({record.uid})"),
        ("status", record.status.value),
        ("severity", record.severity.value),
        ("stream / device", f"{record.stream} / {record.device}"),
        ("started", record.started_at.isoformat()),
        ("ended" if record.ended_at else "last seen", end.isoformat()),
        ("duration", f"{(end - record.started_at).total_seconds():.0f} s"),
        ("anomalous windows", str(record.windows)),
        ("peak score", f"{record.peak_score:.4g}{ratio}"),
        ("threshold at firing", f"{record.threshold:.4g}"),
        ("model", record.model_version),
        ("acknowledged", record.acknowledged_at.isoformat() if record.acknowledged_at else "no"),
    ]
    if record.ack_note:
        fields.append(("note", record.ack_note))
    if record.resolved_at:
        fields.append(("resolved", record.resolved_at.isoformat()))
    if record.resolve_note:
        fields.append(("resolve note", record.resolve_note))
    fields.extend(_reason_fields(record.reason))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")
    print("contributing features:")
    for f in record.top_features:
        print(f"  {f.feature:<24} {f.share:6.1%}  {'#' * round(30 * f.share)}")
    return 0


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    return _alert_action(args, "acknowledge", lambda r: f"acknowledged ({r.status})")


def _alert_action(args: argparse.Namespace, action: str, outcome: Callable[[Any], str]) -> int:
    """Acknowledge or resolve alert ``args.id`` with ``args.note``; 1 if there is none."""
    store = _store(args)
    try:
        record = getattr(store, action)(args.id, note=args.note)
    except KeyError:
        print(f"no alert with id {args.id}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"alert {record.id} {outcome(record)}")
    return 0


def _reason_fields(reason: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Why an alert fired, as ``alerts show`` prints it."""
    if not reason:
        return []
    method = str(reason.get("threshold_method", "?"))
    risk = reason.get("threshold_risk")
    warm = "" if reason.get("threshold_warm", True) else ", model calibration (warming up)"
    history = reason.get("threshold_history")
    state = f"{method}, {history} normal windows{warm}"
    if risk is not None:
        state += f", risk {risk:g}"
    value = reason.get("threshold_value")
    exceedance = reason.get("exceedance")
    fields = [
        ("threshold at opening", f"{value:.4g} ({state})" if value is not None else state),
        ("exceedance prob.", f"{exceedance:.2g}" if exceedance is not None else "-"),
    ]
    if "spike_feature" in reason:
        fields.append(
            ("spike", f"{reason['spike_feature']}, {reason.get('spike_z', 0):.1f} x its noise")
        )
    if "level_feature" in reason:
        z = reason.get("level_z", 0)
        fields.append(("level", f"{reason['level_feature']}, {z:.1f} sd off training's"))
    if "constant_feature" in reason:
        fields.append(
            (
                "constant",
                f"{reason['constant_feature']} left its training value "
                f"{reason.get('constant_expected', 0):g} ({reason.get('constant_value', 0):g})",
            )
        )
    if "stuck_feature" in reason:
        fields.append(
            (
                "stuck",
                f"{reason['stuck_feature']} held one value for {reason.get('stuck_run', 0)} "
                f"readings (limit {reason.get('stuck_limit', 0)})",
            )
        )
    if "relation_feature" in reason:
        fields.append(
            (
                "relation",
                f"{reason['relation_feature']} left its relations to the other features "
                f"({reason.get('relation_z', 0):g} x the device's normal residual)",
            )
        )
    if "noise_feature" in reason:
        fields.append(
            (
                "noise",
                f"{reason['noise_feature']}'s readings were {reason.get('noise_ratio', 0):g} x "
                "as rough as in training's roughest window",
            )
        )
    if "period_feature" in reason:
        fields.append(
            (
                "period",
                f"{reason['period_feature']}'s last period was {reason.get('period_ratio', 0):g} x "
                "further from every earlier one than training's periods ever were",
            )
        )
    fields.append(("config hash", str(reason.get("config_hash", "-"))))
    return fields


def cmd_alerts_resolve(args: argparse.Namespace) -> int:
    return _alert_action(args, "resolve", lambda r: "resolved")


def _dialect(args: argparse.Namespace) -> CsvDialect:
    from sentinel.offline.csvdata import CsvDialect

    separator = args.separator
    if separator is not None and separator.lower() in ("tab", "\\t"):
        separator = "\t"
    return CsvDialect(
        separator=separator,
        decimal=args.decimal,
        timestamp_format=args.timestamp_format,
        timezone=args.timezone,
    )


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from sentinel.model import (
        CONSTANT_FEATURE_HINT,
        constant_features,
        daemon_refusal,
        detector_type,
        resolve_device,
        training_options,
    )
    from sentinel.offline.csvdata import read_feature_csv
    from sentinel.progress import progress_reporter

    config = _load(args)
    refusal = daemon_refusal(config.model.detector)  # it saves the model for the daemon
    if refusal is not None:
        raise ConfigError(refusal)
    stream = _choose_stream(config, args.stream)
    data = read_feature_csv(
        args.csv,
        stream.feature_names,
        timestamp_column=args.timestamp_column,
        max_gap=config.windows.max_gap,
        dialect=_dialect(args),
        skip_missing=True,
        interval=args.interval,
    )
    _report_refused(data.refused, data.first_line)
    torch.set_num_threads(config.model.torch_threads)
    segments = data.training_segments(min_length=config.windows.length)
    progress = progress_reporter(stream.name, config.model.epochs)
    try:
        detector = detector_type(config.model.detector).train(
            segments,
            training_options(config, stream.name, data.interval),
            device=resolve_device(config.model.device),
            first_ts=data.first_ts,
            last_ts=data.last_ts,
            progress=progress,
        )
    finally:
        progress.close()
    from sentinel.model.registry import nats_registry, open_registry

    registry = open_registry(config, role="cli")
    shared = nats_registry(registry)
    try:
        path = registry.save(detector)
        registry.activate(stream.name, detector.version)
    finally:
        if shared is not None:
            shared.stop()
    print(f"model {detector.version} for stream {stream.name} saved to {path} and activated")
    if shared is not None:
        print("every running daemon of the shared registry swaps it in")
    else:
        print("a running daemon picks it up at its next start")
    for name, value in constant_features(segments, stream.feature_names).items():
        print(
            f"warning: feature {name} of stream {stream.name} is constant in the training "
            f"data ({value:g}): {CONSTANT_FEATURE_HINT}"
        )
    return 0


def _report_refused(refused: Mapping[int, RejectReason], first_line: int = 2) -> None:
    """Say how many rows of a CSV were left out as readings the daemon would refuse
    (``first_line``: the file's line number of row 0)."""
    if refused:
        counts = Counter(str(reason) for reason in refused.values())
        first = min(refused) + first_line  # the file's line, 1-based
        print(
            f"warning: {len(refused)} rows left out, a value missing or not finite "
            f"({dict(counts)}; the first at line {first})",
            file=sys.stderr,
        )


def cmd_replay(args: argparse.Namespace) -> int:
    import torch

    from sentinel.model import detector_type, resolve_device
    from sentinel.offline.csvdata import read_feature_csv
    from sentinel.offline.replay import replay

    config, stream, labels = _replay_config(args)
    data = read_feature_csv(
        args.input,
        stream.feature_names,
        timestamp_column=args.timestamp_column,
        max_gap=config.windows.max_gap,
        carry=labels,
        require_timestamps=True,
        dialect=_dialect(args),
        skip_missing=True,
        interval=args.interval,
    )
    _report_refused(data.refused, data.first_line)
    torch.set_num_threads(config.model.torch_threads)
    retrain = args.retrain
    if retrain is None:  # as the daemon would: on when [retrain] is, for the model it retrains
        retrain = config.retrain.enabled and not detector_type(config.model.detector).cannot_save
    summary = replay(
        config,
        stream,
        data,
        args.out,
        device=args.device or Path(args.input).stem,
        # The count alone, not cold_start.span: a recording's rows are its protocol's, and an
        # hour of a series read every second would train into anomalies some benchmarks put
        # 3,000-3,600 rows in (the UCR archive's 136 at 3,198).
        train_rows=args.train_rows or config.cold_start.readings,
        torch_device=resolve_device(config.model.device),
        retrain=retrain,
    )
    if args.report:
        from sentinel.offline.report import render_report

        render_report(args.out, args.report, label_columns=labels)
    print(
        f"{summary.rows} rows ({summary.train_rows} trained on) -> {args.out}: "
        f"{summary.scored_windows} windows scored, {summary.anomalous_rows} anomalous rows, "
        f"{summary.alerts} alerts, model {summary.model_version}, {summary.seconds} s"
    )
    if retrain:
        print(
            f"retraining: {summary.retrain_runs} scheduled runs in the data's time, "
            f"{summary.retrain_promoted} promoted, {summary.retrain_skipped} skipped (too "
            "little clean data, or new: retrain.min_rows, min_new_rows; --no-retrain: keep "
            "the first model)"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sentinel.offline.replay import split_labels
    from sentinel.offline.report import render_report

    labels = split_labels(args.labels) or None
    render_report(args.scores, args.out, label_columns=labels, title=args.title)
    print(f"report written to {args.out}")
    return 0


def cmd_models_export(args: argparse.Namespace) -> int:
    import torch

    from sentinel.cli.models import registry_for
    from sentinel.model import load_detector

    config = _load(args)
    registry = registry_for(config)
    streams = [args.stream] if args.stream else [s.name for s in config.streams]
    found = [s for s in streams if args.version in registry.versions(s)]
    if not found:
        raise ConfigError(
            f"no model version {args.version!r} in {registry.root} "
            f"(streams searched: {', '.join(streams)})"
        )
    if len(found) > 1:
        raise ConfigError(f"version {args.version!r} exists in several streams: use --stream")
    detector = load_detector(registry.path(found[0], args.version), torch.device("cpu"))
    path = detector.export(args.format, args.out)
    print(f"model {args.version} of stream {found[0]} exported as {args.format} to {path}")
    print(f"inputs, outputs and features: {path.name}.json")
    return 0


def _add_models_export(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sentinel models export``, beside list/show/activate/rollback (sentinel/models_cli)."""
    export = actions.add_parser(
        "export",
        help="export a model version for edge runtimes (TorchScript or ONNX)",
        description="Write a saved model version as one graph that scores raw windows "
        "(scaling included): TorchScript for libtorch, ONNX for TensorRT or onnxruntime "
        "(needs the onnx package: pip install 'sentinel-iot[onnx]'). The export is loaded "
        "back and must reproduce the model's scores before it is reported done.",
    )
    export.add_argument("version", metavar="VERSION")
    export.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help=f"TOML config (default: $SENTINEL_CONFIG or {DEFAULT_CONFIG})",
    )
    export.add_argument("--stream", metavar="NAME", help="default: the stream that has VERSION")
    export.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    export.add_argument(
        "--out", type=Path, metavar="FILE", help="default: STREAM-VERSION.pt|.onnx here"
    )
    export.set_defaults(func=cmd_models_export)


def _replay_config(args: argparse.Namespace) -> tuple[SentinelConfig, StreamConfig, list[str]]:
    """The config, stream and label columns a replay runs with.

    The config is the file ``--config`` (or $SENTINEL_CONFIG, or the default path) names;
    where none was named and the default path holds none, the defaults. A config with no
    ``[[streams]]`` gets one for the file: ``--features``, or the file's own columns but
    its times and labels (``file_columns``: a label column, named or recognised, is carried
    to the output, never judged). ``--features`` on a config with streams replaces the
    chosen stream's features.
    """
    from sentinel.config import read_config_data, validate_config
    from sentinel.logs import configure_logging
    from sentinel.offline.csvdata import file_columns
    from sentinel.offline.replay import split_labels

    path = _config_path(args)
    named = bool(args.config or os.environ.get("SENTINEL_CONFIG"))
    from_file = named or Path(path).exists()
    raw = read_config_data(path) if from_file else {}
    labels = list(split_labels(args.label_columns))
    features = list(split_labels(args.features))
    streams = raw.get("streams")
    if not streams:
        if not features:
            found, carried = file_columns(
                args.input,
                timestamp_column=args.timestamp_column,
                carry=labels,
                dialect=_dialect(args),
            )
            features, labels = list(found), list(carried)
            print(
                f"features: {', '.join(features)} (the file's columns; --features to choose)"
                + (f"; labels carried, not judged: {', '.join(labels)}" if labels else ""),
                file=sys.stderr,
            )
        name = args.stream or _stream_name(Path(args.input))
        raw["streams"] = [{"name": name, "topic": "replay/{device}", "features": features}]
    elif features:
        chosen = [s for s in streams if not args.stream or s.get("name") == args.stream]
        if len(chosen) != 1:
            names = ", ".join(str(s.get("name")) for s in streams)
            raise ConfigError(
                f"--features: choose the stream they replace with --stream (streams: {names})"
                if len(chosen) > 1
                else f"no stream {args.stream!r} in the config (streams: {names})"
            )
        chosen[0]["features"] = features
    config = validate_config(raw, path if from_file else "the defaults")
    configure_logging(_log_level(args, config.logging.level), config.logging.format)
    return config, _choose_stream(config, args.stream), labels


def _stream_name(path: Path) -> str:
    """A stream name (letters, digits, _ . -) from a file's name: its stem, other
    characters as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:64] or "replay"


def _choose_stream(config: SentinelConfig, name: str | None) -> StreamConfig:
    if name:
        try:
            return config.stream(name)
        except KeyError:
            names = ", ".join(s.name for s in config.streams)
            raise ConfigError(f"no stream {name!r} in the config (streams: {names})") from None
    if len(config.streams) == 1:
        return config.streams[0]
    raise ConfigError("the config has several streams: choose one with --stream")


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Streaming anomaly detection for IoT sensor fleets: reads sensor readings "
        "from MQTT, scores per-device windows with an LSTM autoencoder and records alerts in "
        "SQLite or PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"sentinel {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log info lines too (commands other than run log only warnings and errors)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            help=f"TOML config (default: $SENTINEL_CONFIG or {DEFAULT_CONFIG})",
        )

    def csv_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--separator",
            metavar="CHAR",
            help="field separator, e.g. ';' or tab (default: detected from the header: "
            "; , tab or |)",
        )
        p.add_argument(
            "--decimal",
            metavar="MARK",
            default=".",
            help="decimal mark of the numbers: . or , (default: .)",
        )
        p.add_argument(
            "--timestamp-format",
            metavar="FMT",
            help="strptime form of the times, e.g. '%%d.%%m.%%Y %%H:%%M:%%S' (default: "
            "detected: epoch s or ms, ISO 8601, or one common day/month form that fits "
            "every row)",
        )
        p.add_argument(
            "--timezone",
            metavar="ZONE",
            help="IANA zone of times written without one, e.g. Europe/Berlin (default: UTC)",
        )
        p.add_argument(
            "--interval",
            type=float,
            metavar="SECONDS",
            help="for a file without a time column: its rows are readings this many seconds "
            "apart (the first at 1970-01-01T00:00:00Z), e.g. 60 for one a minute",
        )

    def db_args(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument(
            "--database",
            metavar="URL",
            help="database URL instead of the config's (e.g. sqlite:///state/sentinel.db)",
        )

    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon until SIGTERM or SIGINT; both drain the queue and exit 0.",
    )
    config_arg(run)
    run.set_defaults(func=cmd_run)

    check = commands.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file; prints every error with its key path.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    mappings = commands.add_parser(
        "nats-mappings",
        help="print the nats-server subject mappings for [nats]",
        description="Print the mappings block that nats-server (2.9 or later) needs so that "
        "each stream's subjects reach <subject_prefix>.<partition>.<subject>, partitioned "
        "by device (docs/OPERATIONS.md, Running on NATS JetStream).",
    )
    mappings.add_argument("file", metavar="FILE")
    mappings.set_defaults(func=cmd_nats_mappings)

    migrate = commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description="Apply database migrations (the daemon also does this at start).",
    )
    db_args(migrate)
    migrate.set_defaults(func=cmd_migrate)

    alerts = commands.add_parser("alerts", help="list and acknowledge alerts")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    listing = alert_commands.add_parser(
        "list",
        help="list alerts, newest first",
        description="List alerts, newest first. PEAK is the peak score over the threshold; "
        "STATUS +ack marks a closed or resolved alert that someone acknowledged.",
    )
    db_args(listing)
    listing.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only alerts started since: 30m, 2h, 7d or an ISO 8601 time",
    )
    listing.add_argument("--device", metavar="D")
    listing.add_argument("--stream", metavar="S")
    listing.add_argument("--status", choices=("open", "acknowledged", "closed", "resolved"))
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="default 100")
    listing.add_argument("--format", choices=("table", "json", "csv"), default="table")
    listing.set_defaults(func=cmd_alerts_list)
    show = alert_commands.add_parser("show", help="one alert in full, with its features")
    db_args(show)
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=cmd_alerts_show)
    ack = alert_commands.add_parser("ack", help="acknowledge an alert")
    db_args(ack)
    ack.add_argument("id", type=int, metavar="ID")
    ack.add_argument("--note", metavar="TEXT", help="a note kept with the acknowledgement")
    ack.set_defaults(func=cmd_alerts_ack)
    resolve = alert_commands.add_parser(
        "resolve",
        help="close an alert for good",
        description="Close an alert as an operator: it becomes 'resolved' and stays so. A "
        "running daemon stops updating it and opens no new alert on that device within "
        "alerts.cooldown.",
    )
    db_args(resolve)
    resolve.add_argument("id", type=int, metavar="ID")
    resolve.add_argument("--note", metavar="TEXT", help="a note kept with the resolution")
    resolve.set_defaults(func=cmd_alerts_resolve)

    train = commands.add_parser(
        "train",
        help="train a stream's model offline from a recorded CSV",
        description="Fit a model from recorded normal operation and make it the stream's "
        "active model. The CSV needs a column per feature of the stream (header names as in "
        "the config); an optional timestamp column splits the data at gaps.",
    )
    config_arg(train)
    train.add_argument("--csv", required=True, type=Path, metavar="FILE")
    train.add_argument("--stream", metavar="NAME", help="needed when the config has several")
    train.add_argument(
        "--timestamp-column",
        metavar="NAME",
        help="default: detected (ts, timestamp, time, datetime, date)",
    )
    csv_args(train)
    train.set_defaults(func=cmd_train)

    rep = commands.add_parser(
        "replay",
        help="run the pipeline over a recorded CSV, driven by its own timestamps",
        description="Replay a recorded CSV through the same windows, model, thresholds and "
        "alert logic as the daemon, as fast as the CPU allows. The first rows train the "
        "model (labels unseen); every row then gets the detector's score, threshold, "
        "verdict, the check that made it anomalous (score, spike:FEATURE or level:FEATURE, "
        "joined by +) and open alert. Label columns are carried to the output, never used. "
        "A row with an empty, NaN or infinite value is the reading the daemon would refuse: "
        "counted, never trained on or fed, its row showing the verdict in force. Without a "
        "config (none named, none at the default path) replay runs on the defaults; a config "
        "without [[streams]] gets one for the file, judging --features or every column but "
        "the times and labels.",
    )
    rep.add_argument("input", type=Path, metavar="INPUT.csv")
    config_arg(rep)
    rep.add_argument("--out", required=True, type=Path, metavar="SCORES.csv")
    rep.add_argument("--stream", metavar="NAME", help="needed when the config has several")
    rep.add_argument(
        "--features",
        metavar="A,B",
        help="columns to judge (default: the stream's; where the config has no stream, or "
        "there is no config, every column but the times and labels)",
    )
    rep.add_argument("--device", metavar="NAME", help="device name (default: the file's stem)")
    rep.add_argument(
        "--timestamp-column",
        metavar="NAME",
        help="default: detected (ts, timestamp, time, datetime, date)",
    )
    csv_args(rep)
    rep.add_argument(
        "--label-columns",
        metavar="A,B",
        help="columns carried to the output, never judged, e.g. anomaly,changepoint (where "
        "the features are the file's own columns, those named anomaly, label, changepoint, "
        "attack ... are carried unless this names others)",
    )
    rep.add_argument(
        "--train-rows",
        type=int,
        metavar="N",
        help="rows that train the model (default: cold_start.readings; the daemon's cold "
        "start also waits for cold_start.span of the stream's time, replay does not)",
    )
    rep.add_argument(
        "--retrain",
        action=argparse.BooleanOptionalAction,
        help="retrain on the [retrain] schedule in the file's own time, as the daemon would "
        "(default: when retrain.enabled, as in the daemon; --no-retrain keeps the first model)",
    )
    rep.add_argument(
        "--report",
        type=Path,
        metavar="FILE.png|FILE.html",
        help="also render the scores as a report (see `sentinel report`)",
    )
    rep.set_defaults(func=cmd_replay)

    report = commands.add_parser(
        "report",
        help="plot a replay's scores: features, score, threshold, alerts and labels",
        description="Render a replay's output as a PNG, or a self-contained HTML page with "
        "tables of alerts and labelled intervals: where it fired, and why.",
    )
    report.add_argument("scores", type=Path, metavar="SCORES.csv")
    report.add_argument("--out", required=True, type=Path, metavar="FILE.png|FILE.html")
    report.add_argument(
        "--labels", metavar="A,B", help="label columns (default: detected by name, e.g. anomaly)"
    )
    report.add_argument("--title", metavar="TEXT")
    report.set_defaults(func=cmd_report)

    from sentinel.cli.devices import add_devices_commands
    from sentinel.cli.models import add_models_commands, add_retrain_command

    _add_models_export(add_models_commands(commands, config_arg, _load))
    add_retrain_command(commands, config_arg, _load)
    add_devices_commands(commands, db_args, config_arg, _load, _store)
    return parser


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Add STATE_UMASK to the caller's umask (a stricter one stays), and give it back."""
    previous = os.umask(STATE_UMASK)
    os.umask(previous | STATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def main(argv: Sequence[str] | None = None) -> int:
    from sentinel.logs import configure_logging

    args = build_parser().parse_args(argv)
    # Before any command runs: one without a config (--database, report) must not fall
    # back to structlog's default, which prints every info line on stdout.
    configure_logging(_log_level(args))
    try:
        with _private_umask():
            result: int = args.func(args)
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        print(NO_TORCH, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SentinelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        from sentinel.cli.models import close_registries

        close_registries()
    return result


if __name__ == "__main__":
    sys.exit(main())
