"""One retraining run of one stream: clean data in, a judged model version out.

The same function runs in the daemon's training process and inline in a replay, so a
replay reproduces what the daemon would have done. It never activates anything: the caller
loads the saved version, activates it and swaps it in, so a model that cannot be loaded
never becomes active.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import structlog

from sentinel.config import COLD_START_SPAN_OF_AGE, ColdStartConfig, SentinelConfig
from sentinel.errors import DataError, ModelError
from sentinel.judge.threshold import calibration_threshold
from sentinel.model.base import META_FILE, Detector, training_options
from sentinel.model.detector_types import detector_type
from sentinel.model.registry import ModelRegistry
from sentinel.model.windowing import make_windows
from sentinel.retrain.promotion import EvalSet, Metrics, build_eval_set, decide, evaluate
from sentinel.retrain.reservoir import CleanData, Reservoir, Run, reservoir_path
from sentinel.timescale import RESERVOIR_AGE_MIN

if TYPE_CHECKING:
    import torch

__all__ = ["RetrainOutcome", "config_hash", "open_reservoir", "run_retrain"]

log = structlog.get_logger(__name__)

Status = Literal["accepted", "rejected", "skipped", "failed"]


@dataclass(frozen=True)
class RetrainOutcome:
    stream: str
    status: Status
    reason: str
    version: str | None = None
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # Accepted runs: per device, the new model's scores on its recent held-back normal
    # windows, oldest first -- the thresholds it starts with (Pipeline.install_model).
    seeds: dict[str, list[float]] = field(default_factory=dict)


def config_hash(config: SentinelConfig, stream: str) -> str:
    """What shapes a model: the stream's features and the window and model settings."""
    data = {
        "stream": config.stream(stream).model_dump(mode="json"),
        "windows": config.windows.model_dump(mode="json"),
        "model": config.model.model_dump(mode="json"),
    }
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reservoir_rule(config: SentinelConfig) -> ColdStartConfig:
    """The cold start's rule as the reservoir can meet it: the first model trains on what
    the reservoir holds, at most ``retrain.reservoir_rows`` readings within
    ``retrain.reservoir_age`` of the newest (auto: at least 14 days). Asked for more -- a
    ``max_readings`` above the rows, a ``span`` beyond the age -- the pruning kept the
    reservoir short of it and the stream waited for its first model for ever; bounded, it
    trains once the reservoir is as full as it gets (``SentinelConfig.warnings`` says so)."""
    rule, retrain = config.cold_start, config.retrain
    rows = retrain.reservoir_rows
    age = RESERVOIR_AGE_MIN if retrain.reservoir_age is None else retrain.reservoir_age
    return rule.model_copy(
        update={
            "readings": min(rule.readings, rows),
            "max_readings": min(rule.max_readings, rows),
            "span": min(rule.span, COLD_START_SPAN_OF_AGE * age),
        }
    )


def open_reservoir(config: SentinelConfig, stream: str, readonly: bool = False) -> Reservoir:
    cfg = config.retrain
    return Reservoir(
        reservoir_path(config.state_dir, stream),
        len(config.stream(stream).features),
        max_rows=cfg.reservoir_rows,
        max_age=cfg.reservoir_age,
        margin=cfg.exclusion_margin,
    ).open(readonly=readonly)


def run_retrain(
    config: SentinelConfig,
    stream: str,
    *,
    reason: str,
    device: torch.device,
    until: float | None = None,
    cold_start: bool = False,
    stop: threading.Event | None = None,
) -> RetrainOutcome:
    """Train a challenger from the reservoir, judge it against the active model, save it.

    ``cold_start``: there is no model yet, so train on all clean readings (nothing held
    back) and need only ``cold_start.readings``. Never raises for bad data or a failed fit:
    those become a ``skipped`` or ``failed`` outcome with the reason.
    """
    cfg = config.retrain
    window = config.windows.length
    registry = ModelRegistry(config.models_dir)
    parent = registry.active_version(stream) if not cold_start else None
    reservoir = open_reservoir(config, stream, readonly=True)
    try:
        if reason == "schedule" and parent is not None and cfg.min_new_rows:
            newest = _newest_trained(registry, stream, parent)
            if newest is not None:
                new = reservoir.readings_since(newest, until)
                if new < cfg.min_new_rows:
                    why = (
                        f"too little new data: {new} readings since the newest the active "
                        f"model's data held, need {cfg.min_new_rows} (retrain.min_new_rows)"
                    )
                    log.info("retrain_skipped", stream=stream, reason=why)
                    return RetrainOutcome(stream, "skipped", why)
        data = reservoir.clean_data(
            window=window,
            max_gap=config.windows.max_gap,
            holdout_fraction=cfg.holdout_fraction,
            until=until,
        )
    finally:
        reservoir.close()
    # The model keeps the interval learnt from its data: it scales the auto time settings.
    options = training_options(config, stream, data.interval)
    needed = reservoir_rule(config).readings if cold_start else cfg.min_rows
    log.info(
        "retrain_data",
        stream=stream,
        reason=reason,
        stored=data.stored,
        clean=data.rows,
        train=data.train_rows,
        needed=needed,
    )
    if data.rows < needed:
        why = (
            f"too little clean data: {data.rows} clean readings of {data.stored} stored "
            f"(anomalous windows and alerts left out), need {needed}"
        )
        log.warning("retrain_skipped", stream=stream, reason=why)
        return RetrainOutcome(stream, "skipped", why)

    champion: Detector | None = None
    if parent is not None:
        try:
            champion = registry.load_version(
                stream, parent, device, max_batch=config.model.score_batch_max
            )
        except ModelError as err:
            log.error("retrain_champion_unusable", stream=stream, version=parent, error=str(err))
    # With no champion nothing is judged on the held-back blocks: a first model trains on
    # every device's runs whole, as the worker's cold start and replay do.
    runs = data.runs if champion is None else data.train
    eval_set = None
    champion_metrics: Metrics | None = None
    if data.holdout:
        eval_set = build_eval_set(
            [r.values for r in data.holdout], window, cfg.inject_magnitude, config.model.seed
        )
        if champion is not None and _fits(champion, config, stream):
            champion_metrics = evaluate(champion, eval_set, config)
    # A challenger that loses by chance (training spread) gets another seed; one trained on
    # poisoned data loses every time (docs/ARCHITECTURE.md, "Attempts").
    attempts = cfg.attempts if champion_metrics is not None else 1
    earlier: list[str] = []
    outcome: RetrainOutcome | None = None
    for attempt in range(attempts):
        if attempt and stop is not None and stop.is_set():
            break
        progress = _progress(stream, options.model.epochs)
        try:
            challenger = detector_type(config.model.detector).train(
                [r.values for r in runs],
                options.with_seed(options.model.seed + attempt),
                device=device,
                first_ts=min(float(r.ts[0]) for r in runs),
                last_ts=max(float(r.ts[-1]) for r in runs),
                progress=progress,
                stop=stop,
            )
        except (DataError, ModelError) as err:
            log.error("retrain_failed", stream=stream, error=str(err))
            return RetrainOutcome(stream, "failed", str(err), parent=parent)
        finally:
            progress.close()
        outcome = _judge(
            config,
            stream,
            challenger,
            eval_set,
            champion_metrics,
            data,
            runs,
            sum(len(r.ts) for r in data.holdout) if champion is not None else 0,
            parent,
            reason,
            attempt=(attempt + 1, attempts),
            earlier=earlier,
        )
        if outcome.status == "accepted":
            break
    assert outcome is not None  # the first attempt always runs
    return outcome


def _judge(
    config: SentinelConfig,
    stream: str,
    challenger: Detector,
    eval_set: EvalSet | None,
    champion_metrics: Metrics | None,
    data: CleanData,
    runs: list[Run],
    holdout_rows: int,
    parent: str | None,
    trigger: str,
    attempt: tuple[int, int],
    earlier: list[str],
) -> RetrainOutcome:
    """Judge one challenger, save it with its status, and say what became of it."""
    metrics: dict[str, Any] = {}
    if champion_metrics is not None:
        metrics["champion"] = champion_metrics.to_dict()
    if eval_set is None:
        decision_ok, why = True, "first model: nothing to compare with"
    else:
        challenger_metrics = evaluate(challenger, eval_set, config)
        metrics["challenger"] = challenger_metrics.to_dict()
        decision = decide(challenger_metrics, champion_metrics, config.retrain.tolerance)
        decision_ok, why = decision.accepted, decision.reason
    number, attempts = attempt
    if attempts > 1:
        seed = challenger.meta.training.get("seed")
        own = f"attempt {number} of {attempts} (model seed {seed}): {why}"
        why = own + ("; earlier: " + "; ".join(earlier) if earlier else "")
        earlier.append(own)  # what the next attempt's reason lists
    status: Status = "accepted" if decision_ok else "rejected"
    held_back: dict[str, list[float]] = {}
    if decision_ok:
        held_back = holdout_scores(challenger, data.holdout, config)
        if holdout_rows:  # held out of training: with no champion a first model trains on them
            # The held-back blocks are normal readings the challenger never trained on,
            # more of them than its own validation part: its calibration pools both, so a
            # normal pattern its validation part happened to miss (a garbage collector's
            # drop every few hundred readings) does not sit above the threshold it starts
            # devices on (docs/BENCHMARKS.md, "Retraining in replay").
            challenger.pool_calibration([v for scores in held_back.values() for v in scores])
    registry = ModelRegistry(config.models_dir)
    registry.save(challenger)
    registry.write_status(
        stream,
        challenger.version,
        {
            "status": status,
            "reason": why,
            "trigger": trigger,
            "attempt": number,
            "decided": datetime.now(UTC).isoformat(timespec="seconds"),
            "parent": parent,
            "config_hash": config_hash(config, stream),
            "data": {
                "first_ts": data.first_ts,
                "last_ts": data.last_ts,
                "clean_rows": data.rows,
                "stored_rows": data.stored,
                "train_rows": sum(len(r.ts) for r in runs),
                "holdout_rows": holdout_rows,
            },
            "validation": {
                k: v
                for k, v in challenger.meta.training.items()
                if k in ("val_loss", "train_loss", "epochs_run", "seconds")
            },
            "metrics": metrics,
        },
    )
    log.info(
        "retrain_judged",
        stream=stream,
        version=challenger.version,
        status=status,
        reason=why,
        parent=parent,
        **{k: v.get("merit") for k, v in metrics.items()},
    )
    seeds = threshold_seeds(challenger, held_back, config)
    return RetrainOutcome(stream, status, why, challenger.version, parent, metrics, seeds)


def threshold_seeds(
    detector: Detector, held_back: dict[str, list[float]], config: SentinelConfig
) -> dict[str, list[float]]:
    """Per device, its ``holdout_scores`` but those above the model's own threshold: a
    live device's threshold only ever learns from windows it judged normal."""
    limit = calibration_threshold(detector.meta.calibration.quantiles, config.threshold)
    return {device: [v for v in scores if v <= limit] for device, scores in held_back.items()}


def holdout_scores(
    detector: Detector, runs: list[Run], config: SentinelConfig
) -> dict[str, list[float]]:
    """Per device, ``detector``'s finite scores on up to ``threshold.history`` held-back
    windows spread evenly over all its held-back blocks (the newest alone would be one time
    of day, and the daily cycle would then raise false alarms), in time order."""
    window, history = config.windows.length, config.threshold.history
    by_device: dict[str, list[np.ndarray]] = {}
    for run in runs:
        by_device.setdefault(run.device, []).append(make_windows(run.values, window, 1))
    seeds: dict[str, list[float]] = {}
    for device, parts in by_device.items():
        windows = np.concatenate(parts)
        if not len(windows):
            continue
        if len(windows) > history:
            windows = windows[np.linspace(0, len(windows) - 1, history).astype(np.int64)]
        scores, _ = detector.score(np.ascontiguousarray(windows))
        seeds[device] = [float(v) for v in scores if np.isfinite(v)]
    return seeds


def _newest_trained(registry: ModelRegistry, stream: str, version: str) -> float | None:
    """The newest reading the data of ``version``'s run held (its status record: the
    reservoir's clean data, held-back blocks included), else the newest it trained on (a
    model from `sentinel train` or a replay's first); None where neither is known."""
    try:
        newest = (registry.status(stream, version).get("data") or {}).get("last_ts")
        if newest is None:
            meta = json.loads((registry.path(stream, version) / META_FILE).read_text("utf-8"))
            newest = (meta.get("training") or {}).get("last_ts")
        return None if newest is None else float(newest)
    except (ModelError, OSError, TypeError, ValueError, AttributeError):
        return None


def _fits(detector: Detector, config: SentinelConfig, stream: str) -> bool:
    return (
        tuple(detector.features) == config.stream(stream).feature_names
        and detector.window == config.windows.length
    )


def _progress(stream: str, epochs: int) -> Any:
    from sentinel.progress import progress_reporter

    return progress_reporter(stream, epochs)
