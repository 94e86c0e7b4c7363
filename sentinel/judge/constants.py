"""The constant check: a feature constant in the model's training data is judged by any
departure from its value, not by its reconstruction error.

Why (issue #21): such a feature -- a command flag, a set point, a sensor that was off -- is
reconstructed perfectly in training, so its calibrated error is about zero and any change
scored 10^3-10^8 times that: one alert for the rest of the file. So the model holds it at
its training value and leaves it out of its score (``LstmAeMeta.constant_features``), and
this check judges it beside the model, as the spike and level checks judge what the score
cannot see.

What an operator wants for a flag that was 0 all through training and then switches and
stays switched is one alert naming it, not an alert for the rest of the file. So each
device keeps, per such feature, the values accepted for it (at first the training value):

* a window holding a reading away from every accepted value (more than ``tolerance`` x
  max(1, |value|); NaN or infinite readings too) is anomalous (``Verdict.constant``), and
  the alert names the feature (``constant:FEATURE`` in replay's ``check`` column);
* a new value held for ``relearn_after`` readings in a row becomes an accepted value
  (``constant_value_learnt``, audited): the alert closes as the windows turn normal, and
  later switches between known values do not alert;
* a value the feature went to and came back from ``accept_returns`` times, in excursions
  that held that one value, is accepted at the next departure to it
  (``constant_value_learnt`` with ``returns``, audited): a command sent as a one-reading
  pulse never stays switched, and spacecraft telemetry's command channels are 0 but for
  such pulses, with training that need not hold every command; each pulse of a command
  training never saw alerted (the synthetic ``rare_commands``: 23-26 false alerts a
  series). Now a new command alerts at its first pulse, as a switched flag alerts once;
* not even then where it pulses like its siblings: a run of at most ``PULSE_READINGS``
  readings, from the value the model's pulse trains rest at to one they pulsed to in
  training (``Detector.pulse_shapes``), is no departure (``sibling_pulses``). A command
  channel whose command the training data happened not to hold, beside channels of
  commands it did, sends it as they send theirs. Held longer, such a value departed at
  its first reading, and is flagged and learnt as any other;
* a feature that keeps departing for ``relearn_after`` readings without settling on one
  value is no longer judged on that device (``constant_feature_released``, audited): it
  varies now, which only a model trained on such data can judge.

So a departure alerts for at most ``relearn_after`` readings plus a window. The state is
per device and model version (a new model brings its own constants) and is created only
when a device first departs. It is saved with the thresholds (``snapshot``/``restore``,
under ``constants`` in thresholds.json) and taken back only for the same model, so a flag
that moved on before a restart does not alert again after it; a run in progress restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from sentinel.config import ConstantsConfig
from sentinel.model.base import PULSE_READINGS, Detector
from sentinel.records import AuditEvent, ConstantHit, Window

__all__ = ["ConstantCheck"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Feature:
    """One constant feature of one device, once it has departed."""

    accepted: list[float]
    run_value: float = math.nan  # the value of the newest readings' run
    run: int = 0  # readings in that run
    departing: int = 0  # readings in a row away from every accepted value
    released: bool = False
    # [value, count]: excursions to one value that came back to an accepted one
    returns: list[list[float]] = field(default_factory=list)


@dataclass(slots=True)
class _Device:
    version: str
    last_end: float  # end_ts of the last window seen
    features: dict[int, _Feature] = field(default_factory=dict)


class ConstantCheck:
    """Per window, the constant feature furthest from its accepted values, or None."""

    def __init__(self, config: ConstantsConfig, hop: int) -> None:
        self.config = config
        self.hop = hop
        self._devices: dict[tuple[str, str], _Device] = {}
        self._events: list[AuditEvent] = []

    def reconfigure(self, config: ConstantsConfig, hop: int) -> None:
        self.config = config
        self.hop = hop

    def drain_events(self) -> list[AuditEvent]:
        """Audit events (values learnt, features released) since the last call."""
        events, self._events = self._events, []
        return events

    def forget(self, stream: str, device: str) -> None:
        self._devices.pop((stream, device), None)

    def snapshot(self, stream: str) -> dict[str, dict[str, object]]:
        """What ``stream``'s devices learnt (values accepted, features released), for
        ``thresholds.json``: a restart must not alert again on a value already learnt."""
        return {
            device: {
                "version": state.version,
                "last_end": state.last_end,
                "features": {
                    str(index): {
                        "accepted": list(f.accepted),
                        "released": f.released,
                        "returns": [list(r) for r in f.returns],
                    }
                    for index, f in state.features.items()
                },
            }
            for (name, device), state in self._devices.items()
            if name == stream
        }

    def restore(self, stream: str, saved: dict[str, dict[str, Any]], version: str) -> int:
        """Take back ``snapshot``'s devices learnt on model ``version`` (another model has
        other constants: its devices are left out); returns how many were restored. A run
        in progress restarts: what is restored is what was learnt."""
        count = 0
        for device, raw in saved.items():
            if raw["version"] != version:
                continue
            features = raw["features"]
            if not isinstance(features, dict):
                raise TypeError(f"constants of device {device!r}: features is not a mapping")
            state = _Device(version, float(raw["last_end"]))
            for index, f in features.items():
                accepted = [float(v) for v in f["accepted"]]
                if not accepted:
                    raise ValueError(f"constants of device {device!r}: no accepted value")
                # absent in snapshots written before excursions were counted
                returns = [[float(v), int(n)] for v, n in f.get("returns", [])]
                state.features[int(index)] = _Feature(
                    accepted, released=bool(f["released"]), returns=returns
                )
            self._devices[(stream, device)] = state
            count += 1
        return count

    def check(self, detector: Detector, windows: list[Window]) -> list[ConstantHit | None]:
        """One hit or None per window of one stream, in order (one device's windows in
        time order, as the pipeline hands them)."""
        constants = detector.constant_values() if self.config.enabled else {}
        if not constants:
            return [None] * len(windows)
        n = detector.meta.training.get("n_readings", 0)
        exceedance = 1.0 / (float(n) + 1.0) if isinstance(n, int | float) and n > 0 else 1.0
        pairs = detector.pulse_shapes()
        return [self._one(detector, constants, pairs, window, exceedance) for window in windows]

    def _one(
        self,
        detector: Detector,
        constants: dict[int, float],
        pairs: tuple[tuple[float, float], ...],
        window: Window,
        exceedance: float,
    ) -> ConstantHit | None:
        key = (window.stream, window.device)
        values = np.asarray(window.values, dtype=np.float64)
        device = self._devices.get(key)
        if device is not None and device.version != detector.version:
            del self._devices[key]  # another model's constants
            device = None
        fresh = device is None or window.start_ts > device.last_end
        new = len(values) if fresh else min(self.hop, len(values))
        # (distance, feature, value, age of the newest departing reading)
        worst: tuple[float, int, float, int] | None = None
        for index, expected in constants.items():
            column = values[:, index]
            state = device.features.get(index) if device is not None else None
            if state is None:
                if self._close(column, [expected]).all():
                    continue  # never departed: no state needed
                if device is None:
                    device = self._devices[key] = _Device(detector.version, window.end_ts)
                    new = len(values)
                state = device.features[index] = _Feature(accepted=[expected])
            if state.released:
                continue
            pulses = self._pulse_values(pairs, expected)
            tail = column[len(column) - new :]
            self._learn(key, detector, index, state, tail, window.end_ts, pulses)
            if state.released:
                continue
            away = ~self._close(column, state.accepted)
            if pulses and away.any():
                away &= ~self._pulsed(column, pulses)
            if away.any():
                off = column[away]
                distance = np.where(np.isfinite(off), np.abs(off - expected), np.inf)
                at = int(np.argmax(distance))
                if worst is None or distance[at] > worst[0]:
                    newest = len(column) - 1 - int(np.flatnonzero(away)[-1])
                    worst = (float(distance[at]), index, float(off[at]), newest)
        if device is not None:
            device.last_end = window.end_ts
        if worst is None:
            return None
        _, index, value, age = worst
        return ConstantHit(index, value, constants[index], exceedance, age)

    def _close(self, column: np.ndarray, accepted: list[float]) -> np.ndarray:
        """Which readings lie within tolerance of one of the ``accepted`` values."""
        tol = self.config.tolerance
        near = np.zeros(column.shape, dtype=bool)
        for value in accepted:
            near |= np.abs(column - value) <= tol * max(1.0, abs(value))
        return near  # NaN compares False: a departure

    def _pulse_values(self, pairs: tuple[tuple[float, float], ...], rest: float) -> list[float]:
        """The values the detector's pulse trains pulsed to from ``rest`` (a constant
        feature's training value) in training: a pulse of such a feature to one of them is
        read as one of theirs."""
        if not self.config.sibling_pulses:
            return []
        return [value for at, value in pairs if self._close(np.asarray([at]), [rest])[0]]

    def _pulsed(self, column: np.ndarray, values: list[float]) -> np.ndarray:
        """Which readings lie in a run of at most ``PULSE_READINGS`` readings at one of
        ``values`` (a run cut by the window's start is judged by what the window holds;
        a longer one shows whole in a later window)."""
        pulsed = np.zeros(column.shape, dtype=bool)
        for value in values:
            at = np.r_[False, self._close(column, [value]), False]
            edges = np.flatnonzero(np.diff(at.astype(np.int8)))
            for start, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
                if end - start <= PULSE_READINGS:
                    pulsed[start:end] = True
        return pulsed

    def _learn(
        self,
        key: tuple[str, str],
        detector: Detector,
        index: int,
        state: _Feature,
        new: np.ndarray,
        at: float,
        pulses: list[float],
    ) -> None:
        """Follow the new readings: accept a value held ``relearn_after`` readings in a row,
        or one the feature went to and came back from ``accept_returns`` times; release a
        feature that departed that long without settling. A run of at most
        ``PULSE_READINGS`` readings at one of ``pulses`` is no departure; held longer, it
        departed at its first reading."""
        limit = self.config.relearn_after
        near = self._close(new, state.accepted)
        pulse = self._close(new, pulses) if pulses else np.zeros(new.shape, dtype=bool)
        for reading, known, at_pulse in zip(
            new.tolist(), near.tolist(), pulse.tolist(), strict=True
        ):
            if known and state.departing and state.run >= state.departing:
                # back from an excursion that held one value throughout (a command pulse)
                self._returned(state, state.run_value)
            elif not known and self._recurs(key, detector, index, state, reading, at):
                known = True
            finite = math.isfinite(reading)
            if (
                finite
                and math.isfinite(state.run_value)
                and self._close(np.asarray([reading]), [state.run_value])[0]
            ):
                state.run += 1
            else:
                state.run_value, state.run = (reading, 1) if finite else (math.nan, 0)
            if at_pulse and not known:
                # a pulse like its siblings' is no departure; held longer, it departed
                # when it began
                known = state.run <= PULSE_READINGS
                held = 0 if known else state.run
            else:
                held = 0
            state.departing = 0 if known else max(state.departing + 1, held)
            if not known and state.run >= limit:
                state.accepted.append(state.run_value)
                state.departing = 0
                self._audit(key, detector, index, at, "constant_value_learnt", state)
            elif state.departing >= limit:
                state.released = True
                self._audit(key, detector, index, at, "constant_feature_released", state)
                return

    def _counted(self, state: _Feature, value: float) -> list[float] | None:
        """The [value, count] of ``state.returns`` within tolerance of ``value``, if any."""
        for entry in state.returns:
            if self._close(np.asarray([value]), [entry[0]])[0]:
                return entry
        return None

    def _returned(self, state: _Feature, value: float) -> None:
        """Count an excursion to ``value`` that ended back at an accepted value."""
        if not self.config.accept_returns or not math.isfinite(value):
            return
        entry = self._counted(state, value)
        if entry is None:
            state.returns.append([value, 1])
        else:
            entry[1] += 1

    def _recurs(
        self,
        key: tuple[str, str],
        detector: Detector,
        index: int,
        state: _Feature,
        reading: float,
        at: float,
    ) -> bool:
        """Whether departing ``reading`` goes to a value the feature has already been to and
        come back from ``accept_returns`` times; if so it is accepted from now on (the
        excursions counted alerted, the ones after do not)."""
        wanted = self.config.accept_returns
        if not wanted or not state.returns or not math.isfinite(reading):
            return False
        entry = self._counted(state, reading)
        if entry is None or entry[1] < wanted:
            return False
        state.returns.remove(entry)
        state.accepted.append(entry[0])
        self._audit(key, detector, index, at, "constant_value_learnt", state, int(entry[1]))
        return True

    def _audit(
        self,
        key: tuple[str, str],
        detector: Detector,
        index: int,
        at: float,
        kind: str,
        state: _Feature,
        returns: int = 0,
    ) -> None:
        detail: dict[str, object] = {
            "feature": detector.features[index],
            "training_value": state.accepted[0],
            "accepted": list(state.accepted),
            "model_version": detector.version,
            "relearn_after": self.config.relearn_after,
        }
        if kind == "constant_value_learnt":
            detail["value"] = state.accepted[-1]
            # how it was learnt: held relearn_after readings (0), or after this many
            # excursions to it that came back
            detail["returns"] = returns
        self._events.append(AuditEvent(key[0], key[1], at, kind, detail))
        log.info(kind, stream=key[0], device=key[1], at=at, **detail)
