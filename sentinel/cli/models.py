"""``sentinel models ...`` and ``sentinel retrain``: the model registry from the command line.

Each action is one ``add_*`` function registered in ``MODEL_ACTIONS``; a new action (e.g.
``export``) is one more function appended to that list. ``activate`` and ``rollback``
switch the registry's ACTIVE pointer and then tell a running daemon through its control
socket (``<state_dir>/control.sock``) to swap the version in; with no daemon running, the
next start picks it up. With ``[registry] backend = "nats"`` they switch the shared active
key instead, which every daemon watches (``sentinel.daemon.follow``). Listing and
switching live in ``sentinel.model.versions``, which the REST API shares.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sentinel.config import SentinelConfig
from sentinel.errors import ConfigError, ModelError

__all__ = [
    "MODEL_ACTIONS",
    "add_models_commands",
    "add_retrain_command",
    "close_registries",
    "registry_for",
]

ConfigArg = Callable[[argparse.ArgumentParser], None]
Loader = Callable[[argparse.Namespace], SentinelConfig]


# One registry (one NATS connection) per config for the command; closed when it ends.
_OPENED: dict[int, tuple[SentinelConfig, Any]] = {}


def registry_for(config: SentinelConfig) -> Any:
    """The config's registry (``sentinel.model.Registry``), opened once per command."""
    from sentinel.model.registry import open_registry

    opened = _OPENED.get(id(config))
    if opened is None:
        opened = _OPENED[id(config)] = (config, open_registry(config, role="cli"))
    return opened[1]


def close_registries() -> None:
    """Stop what ``registry_for`` opened (the NATS links); ``main`` calls it at the end,
    also after commands that never opened one (and may run without torch)."""
    while _OPENED:
        _, (_, registry) = _OPENED.popitem()
        stop = getattr(registry, "stop", None)  # a NatsRegistry; the file registry has none
        if stop is not None:
            stop()


def _streams(config: SentinelConfig, name: str | None) -> list[str]:
    if name is None:
        return [s.name for s in config.streams]
    try:
        config.stream(name)
    except KeyError:
        raise ConfigError(f"no stream {name!r} in the config") from None
    return [name]


def _one_stream(config: SentinelConfig, name: str | None) -> str:
    streams = _streams(config, name)
    if len(streams) != 1:
        raise ConfigError("the config has several streams: choose one with --stream")
    return streams[0]


def _find(config: SentinelConfig, version: str, stream: str | None) -> str:
    registry = registry_for(config)
    found = [s for s in _streams(config, stream) if version in registry.versions(s)]
    if not found:
        raise ModelError(f"no model version {version!r}")
    if len(found) > 1:
        raise ConfigError(f"version {version!r} exists in several streams: use --stream")
    return found[0]


def _ts(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M")


def _meta(registry: Any, stream: str, version: str) -> dict[str, Any]:
    from sentinel.model.versions import read_meta

    return read_meta(registry, stream, version)


def _trained_on(status: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    from sentinel.model.versions import trained_on

    data = trained_on(status, meta)
    return {"data_from": _ts(data.first_ts), "data_to": _ts(data.last_ts), "rows": data.rows}


def _rows(config: SentinelConfig, stream: str | None) -> list[dict[str, Any]]:
    from sentinel.model.versions import version_rows

    return [
        {
            "stream": r.stream,
            "version": r.version,
            "role": r.role,
            "status": r.status,
            "data_from": _ts(r.trained_on.first_ts),
            "data_to": _ts(r.trained_on.last_ts),
            "rows": r.trained_on.rows,
            "merit": r.merit,
            "parent": r.parent,
        }
        for r in version_rows(registry_for(config), _streams(config, stream))
    ]


def _cmd_list(load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        rows = _rows(load(args), args.stream)
        if args.format == "json":
            json.dump(rows, sys.stdout, indent=2)
            print()
            return 0
        if not rows:
            print("no models")
            return 0
        columns = list(rows[0])
        text = [["-" if r[c] is None else str(r[c]) for c in columns] for r in rows]
        widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for t in text:
            print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
        return 0

    return run


def _cmd_show(load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(args)
        stream = _find(config, args.version, args.stream)
        registry = registry_for(config)
        meta = _meta(registry, stream, args.version)
        meta.get("calibration", {}).pop("scores", None)  # 20,000 numbers help nobody here
        out = {
            "stream": stream,
            "version": args.version,
            "active": registry.active_version(stream) == args.version,
            "status": registry.status(stream, args.version),
            "meta": meta,
        }
        if args.format == "json":
            json.dump(out, sys.stdout, indent=2)
            print()
            return 0
        fields = _show_fields(out, registry.previous_version(stream) == args.version)
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            print(f"{name.ljust(width)}  {value}")
        return 0

    return run


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _sampling(interval: Any) -> str:
    """The learnt interval that scales the auto time settings (sentinel.timescale)."""
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        return f"{interval:g} s between readings (learnt; scales the auto time settings)"
    return "not recorded (a model from before intervals: one reading a second assumed)"


def _show_fields(out: dict[str, Any], previous: bool) -> list[tuple[str, str]]:
    """``models show`` as text: what the version is, how it was judged, what it learnt."""
    status, meta = out["status"], out["meta"]
    training = meta.get("training", {})
    role = " (active)" if out["active"] else " (previous: rollback target)" if previous else ""
    judged = status.get("status", "trained (sentinel train: not judged)")
    if status.get("reason"):
        judged += f": {status['reason']}"
    data = _trained_on(status, meta)
    held = status.get("data", {}).get("holdout_rows")
    features = ", ".join(meta.get("features", [])) or "-"
    if meta.get("relative_features"):
        features += f" (judged by their changes: {', '.join(meta['relative_features'])})"
    if meta.get("stepped_features"):
        features += f" (read, not scored: {', '.join(meta['stepped_features'])})"
    if meta.get("counter_features"):
        features += f" (counters, no set point: {', '.join(meta['counter_features'])})"
    window = f"{meta.get('window', '?')} readings"
    if meta.get("score_steps"):
        window += f", the newest {meta['score_steps']} scored"
    fields = [
        ("version", f"{out['version']}{role}"),
        ("stream", out["stream"]),
        ("status", judged),
    ]
    if status.get("trigger"):
        fields.append(("trigger", f"{status['trigger']}, decided {status.get('decided', '?')}"))
    fields += [
        ("parent", status.get("parent") or "-"),
        ("created", str(meta.get("created", "-"))),
        (
            "data",
            f"{data['data_from'] or '?'} to {data['data_to'] or '?'} UTC, "
            f"{data['rows'] if data['rows'] is not None else '?'} rows trained on"
            + (f", {held} held back" if held else ""),
        ),
        ("features", features),
        ("window", window),
        ("sampling", _sampling(meta.get("interval"))),
    ]
    detector = meta.get("detector", "lstm_ae")  # models saved before the key: all lstm_ae
    if detector == "lstm_ae":
        fields.append(
            (
                "network",
                f"LSTM autoencoder, {meta.get('num_layers', '?')} layer(s), hidden "
                f"{meta.get('hidden_size', '?')}, latent {meta.get('latent_size', '?')}",
            )
        )
    else:
        fields.append(("detector", str(detector)))
    if "epochs_run" in training:
        fields.append(
            (
                "training",
                f"{training['epochs_run']} epochs, loss {_number(training.get('train_loss'))} "
                f"(validation {_number(training.get('val_loss'))}), "
                f"{_number(training.get('seconds'))} s, seed {training.get('seed', '?')}",
            )
        )
    quantiles = meta.get("calibration", {}).get("quantiles", {})
    if quantiles:
        fields.append(
            ("calibration", ", ".join(f"q{q} {_number(v)}" for q, v in quantiles.items()))
        )
    for side, m in status.get("metrics", {}).items():
        fields.append(
            (
                side,
                f"merit {_number(m.get('merit'))}: detection {_number(m.get('detection'))}, "
                f"false rate {_number(m.get('false_rate'))}, AUC {_number(m.get('auc'))} "
                f"over {m.get('windows', '?')} windows",
            )
        )
    return fields


def _notify(config: SentinelConfig, stream: str, version: str) -> None:
    from sentinel.daemon.control import CONTROL_SOCKET, send_command

    try:
        answer = send_command(
            config.state_dir / CONTROL_SOCKET, {"command": "reload", "stream": stream}
        )
    except (ConnectionError, OSError):
        print("no running daemon answered: it picks this version up at its next start")
        return
    if answer.get("ok"):
        print(f"the running daemon swapped in {answer.get('version')}")
    else:
        print(f"the running daemon refused it: {answer.get('error')}", file=sys.stderr)


def _switch(config: SentinelConfig, stream: str, version: str, reason: str) -> None:
    from sentinel.model.versions import switch_version

    # Loaded first: a version that cannot be loaded must never become active.
    switch_version(registry_for(config), stream, version, reason)
    print(f"stream {stream}: {version} is active")
    _notify(config, stream, version)


def _cmd_activate(load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(args)
        stream = _find(config, args.version, args.stream)
        _switch(config, stream, args.version, "manual: models activate")
        return 0

    return run


def _cmd_rollback(load: Loader) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = load(args)
        stream = _one_stream(config, args.stream)
        previous = registry_for(config).previous_version(stream)
        if previous is None:
            print(f"stream {stream}: no previous version to roll back to", file=sys.stderr)
            return 1
        _switch(config, stream, previous, "manual: models rollback")
        return 0

    return run


def add_list(actions: Any, config_arg: ConfigArg, load: Loader) -> None:
    p = actions.add_parser("list", help="model versions, newest first, with their status")
    config_arg(p)
    p.add_argument("--stream", metavar="S")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_list(load))


def add_show(actions: Any, config_arg: ConfigArg, load: Loader) -> None:
    p = actions.add_parser("show", help="one version in full: metadata, status, metrics")
    config_arg(p)
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--stream", metavar="S")
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: the metadata and status records as stored (no calibration scores)",
    )
    p.set_defaults(func=_cmd_show(load))


def add_activate(actions: Any, config_arg: ConfigArg, load: Loader) -> None:
    p = actions.add_parser(
        "activate",
        help="make a version active (a running daemon swaps it in)",
        description="Load-check VERSION, make it active, and tell a running daemon through "
        "its control socket to swap it in.",
    )
    config_arg(p)
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--stream", metavar="S")
    p.set_defaults(func=_cmd_activate(load))


def add_rollback(actions: Any, config_arg: ConfigArg, load: Loader) -> None:
    p = actions.add_parser(
        "rollback",
        help="reactivate the version that was active before the current one",
    )
    config_arg(p)
    p.add_argument("--stream", metavar="S", help="needed when the config has several")
    p.set_defaults(func=_cmd_rollback(load))


# Extend here: add_export(actions, config_arg, load) and so on.
MODEL_ACTIONS: list[Callable[[Any, ConfigArg, Loader], None]] = [
    add_list,
    add_show,
    add_activate,
    add_rollback,
]


def add_models_commands(commands: Any, config_arg: ConfigArg, load: Loader) -> Any:
    """The ``models`` group with every action in ``MODEL_ACTIONS``; returns its subparsers
    so that the caller can add more (``export`` lives in sentinel/cli/main.py)."""
    models = commands.add_parser(
        "models", help="list, inspect, activate, roll back and export model versions"
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for add in MODEL_ACTIONS:
        add(actions, config_arg, load)
    return actions


def add_retrain_command(commands: Any, config_arg: ConfigArg, load: Loader) -> None:
    p = commands.add_parser(
        "retrain",
        help="ask the running daemon to retrain a stream now",
        description="Queue a retraining run in the running daemon (through its control "
        "socket). The result is judged against the active model like a scheduled run.",
    )
    config_arg(p)
    p.add_argument("--stream", metavar="S", help="needed when the config has several")

    def run(args: argparse.Namespace) -> int:
        from sentinel.daemon.control import CONTROL_SOCKET, send_command

        config = load(args)
        stream = _one_stream(config, args.stream)
        try:
            answer = send_command(
                config.state_dir / CONTROL_SOCKET, {"command": "retrain", "stream": stream}
            )
        except (ConnectionError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if not answer.get("ok"):
            print(f"error: {answer.get('error')}", file=sys.stderr)
            return 1
        queued = "queued" if answer.get("queued") else "already queued or running"
        print(f"stream {stream}: retraining {queued}; see `sentinel models list`")
        return 0

    p.set_defaults(func=run)
