"""A fleet of simulated centrifugal pumps with labelled anomalies, published over MQTT.

Each pump is a small physical model: a variable-speed drive switches between a few load levels
with smooth ramps; demand and ambient temperature follow a daily cycle; flow is proportional to
speed x demand, pressure follows a system curve (static + k * load^2), motor current follows the
hydraulic power plus the no-load current, winding temperature is a first-order lag of ambient +
I^2 heating, vibration grows with speed and line voltage sags with current. Sensors add
per-device calibration errors, white noise and quantisation.

Anomalies are scheduled per device as a Poisson process after the warmup, never overlapping.
Their sizes are in multiples of a channel's *scale*, its typical short-term variation at a steady
load level (see ``FleetSimulator.scale``); the ground truth is a list of ``AnomalyEvent`` whose
``[start, end)`` interval covers exactly the affected readings' timestamps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from simulators.broker import PUBLISH_WINDOW, Publisher

__all__ = [
    "FEATURES",
    "KINDS",
    "UNITS",
    "AnomalyEvent",
    "FleetSimulator",
    "SimReading",
    "main",
]

FEATURES = ("flow", "pressure", "current", "temperature", "vibration", "voltage")
UNITS = {
    "flow": "m3/h",
    "pressure": "bar",
    "current": "A",
    "temperature": "Cel",
    "vibration": "mm/s",
    "voltage": "V",
}
KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst", "decorrelation")
DAY = 86_400.0

_QUANTUM = np.array([0.1, 0.01, 0.01, 0.1, 0.01, 0.1])
_DECIMALS = (1, 2, 2, 1, 2, 1)
_NONNEG = np.array([True, True, True, False, True, True])
# Duration range in simulated seconds, and the fewest readings an event covers at coarse steps.
_DURATION = {
    "level_shift": (60.0, 300.0, 16),
    "drift": (900.0, 3600.0, 64),
    "stuck": (60.0, 300.0, 16),
    "noise_burst": (30.0, 180.0, 16),
    "decorrelation": (120.0, 600.0, 32),
}
_BLOCK = 512  # normals drawn per device at a time: fast, and independent of how steps are read


@dataclass(frozen=True, slots=True)
class SimReading:
    """One simulated sample of all features of one device."""

    device: str
    ts: float  # epoch seconds UTC
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """A labelled anomaly: readings with ``start <= ts < end`` of ``device`` are affected.

    ``magnitude``: spike / level_shift / drift: the signed offset (drift: at its end) in
    multiples of the channel's scale; noise_burst: the factor on the sensor noise; stuck: 0;
    decorrelation: the extra (friction) current in multiples of the current's scale.
    """

    device: str
    kind: str
    features: tuple[str, ...]
    start: float
    end: float
    magnitude: float

    def to_json(self) -> str:
        data = asdict(self)
        data["features"] = list(self.features)
        return json.dumps(data, separators=(",", ":"))


@dataclass(slots=True)
class _Active:
    event: AnomalyEvent
    channel: int
    start_k: int
    end_k: int
    offset: float = 0.0  # channel units
    noise_mult: float = 1.0
    held: float = 0.0  # stuck value
    frozen_load: float = 0.0  # decorrelation: the load the current keeps following


def _ou(x: float, dt: float, tau: float, std: float, z: float) -> float:
    """Exact Ornstein-Uhlenbeck update: the statistics do not depend on the step size."""
    a = math.exp(-dt / tau)
    return x * a + std * math.sqrt(1.0 - a * a) * z


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(slots=True)
class _Pump:
    """Physical and sensor state of one device; all randomness from its own generators."""

    name: str
    phys: np.random.Generator
    anom: np.random.Generator
    p: dict[str, float] = field(default_factory=dict)
    levels: tuple[float, ...] = ()
    scale: np.ndarray = field(default_factory=lambda: np.zeros(6))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(6))
    gain: np.ndarray = field(default_factory=lambda: np.ones(6))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(6))
    noise: np.ndarray = field(default_factory=lambda: np.zeros((0, 9)))
    row: int = _BLOCK
    level_from: float = 0.0
    level_to: float = 0.0
    ramp_start: float = 0.0
    ramp_len: float = 1.0
    next_switch: float = 0.0
    ou_demand: float = 0.0
    ou_vib: float = 0.0
    ou_alt: float = 0.0
    temp: float = math.nan
    last: np.ndarray = field(default_factory=lambda: np.zeros(6))
    active: _Active | None = None
    next_event: float = math.inf


class FleetSimulator:
    """Deterministic (per seed) readings of ``devices`` pumps, one step at a time."""

    def __init__(
        self,
        devices: int,
        seed: int,
        step: float = 1.0,
        *,
        start_ts: float = 1_704_067_200.0,  # 2024-01-01T00:00:00Z
        anomaly_rate: float = 2.0,
        warmup: float = 600.0,
        kinds: Sequence[str] = KINDS,
        magnitude: float = 1.0,
        day_length: float = DAY,
        on_event: Callable[[AnomalyEvent], None] | None = None,
        drift: float = 0.0,
    ) -> None:
        if devices < 1 or step <= 0 or anomaly_rate < 0 or warmup < 0 or magnitude <= 0:
            raise ValueError(
                "need devices >= 1, step > 0, anomaly_rate >= 0, warmup >= 0, magnitude > 0"
            )
        if day_length < 600:
            raise ValueError("day_length must be at least 600 simulated seconds")
        # The period of the daily cycles (ambient temperature, demand, supply voltage). Tests
        # compress it so that a short clean warm-up still covers a whole "day".
        self.day = float(day_length)
        # Slow concept drift (issue #5): wear grows by `drift` per simulated day. The
        # impeller loses head (pressure falls), the bearings drag (current, and with it
        # the winding temperature and the voltage sag, rise) and vibration grows -- the
        # relations between channels move, not one channel's level. Not an anomaly: the
        # new normal that a model trained on the first days has never seen.
        if drift < 0:
            raise ValueError("drift must be >= 0")
        self.drift = float(drift)
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {sorted(kinds)}")
        self.step = float(step)
        self.start_ts = float(start_ts)
        self.anomaly_rate = float(anomaly_rate)
        self.warmup = float(warmup)
        self.kinds = tuple(kinds)
        self.magnitude = float(magnitude)
        self.truth: list[AnomalyEvent] = []
        self._on_event = on_event
        self._grid_rng = np.random.default_rng([seed, 1_000_003])
        self._grid_ou = 0.0
        self._pumps = [self._make_pump(f"pump-{i:03d}", seed, i) for i in range(devices)]

    @property
    def devices(self) -> list[str]:
        return [p.name for p in self._pumps]

    def scale(self, device: str) -> dict[str, float]:
        """Typical short-term variation of each channel at a steady load (anomaly unit)."""
        pump = next(p for p in self._pumps if p.name == device)
        return dict(zip(FEATURES, (float(s) for s in pump.scale), strict=True))

    # -- construction ----------------------------------------------------------------------

    def _make_pump(self, name: str, seed: int, index: int) -> _Pump:
        # Separate streams: the normal signal of a device is the same whatever its anomalies.
        phys = np.random.default_rng([seed, index, 0])
        pump = _Pump(name=name, phys=phys, anom=np.random.default_rng([seed, index, 1]))
        u = phys.uniform
        p = {
            "q_rated": u(30, 80),
            "p_static": u(0.8, 1.5),
            "p_dyn": u(2.5, 4.0),
            "eta": u(0.6, 0.75) * 0.9,
            "pf": u(0.82, 0.88),
            "rise": u(35, 50),
            "tau_temp": u(900, 1800),
            "t_mean": u(18, 28),
            "t_amp": u(3, 6),
            "t_peak": u(14, 16) / 24 * self.day,
            "d_amp": u(0.06, 0.12),
            "d_peak": u(11, 18) / 24 * self.day,
            "vib_base": u(1.2, 2.8),
            "r_drop": u(0.1, 0.3),
            "dwell": u(300, 900),
        }
        i_hyd = self._hydraulic_current(p, 1.0, 400.0)
        p["i0"] = u(0.25, 0.35) * i_hyd
        p["k_heat"] = p["rise"] / (i_hyd + p["i0"]) ** 2
        pump.p = p
        choice = phys.choice([0.55, 0.65, 0.75, 0.85, 0.95, 1.0], size=3, replace=False)
        pump.levels = tuple(sorted(min(1.0, float(c) + u(-0.02, 0.02)) for c in choice))
        i_rated = i_hyd + p["i0"]
        pump.scale = np.array([0.025 * p["q_rated"], 0.1, 0.03 * i_rated, 1.0, 0.12, 1.2])
        pump.sigma = np.array([0.008 * p["q_rated"], 0.03, 0.012 * i_rated, 0.15, 0.04, 0.4])
        pump.sigma *= phys.uniform(0.8, 1.2, size=6)
        pump.gain = phys.uniform(0.98, 1.02, size=6)
        pump.bias = phys.normal(0.0, 0.3, size=6) * pump.sigma
        level = float(phys.choice(pump.levels))
        pump.level_from = pump.level_to = level
        pump.next_switch = self.start_ts + float(phys.exponential(p["dwell"]))
        if self.anomaly_rate > 0:
            pump.next_event = self.start_ts + self.warmup + self._gap(pump)
        return pump

    @staticmethod
    def _hydraulic_current(p: dict[str, float], load: float, volts: float) -> float:
        flow = p["q_rated"] * load
        pressure = p["p_static"] + p["p_dyn"] * load * load
        watts = flow / 3600.0 * pressure * 1e5 / p["eta"]
        return watts / (math.sqrt(3.0) * volts * p["pf"])

    def _gap(self, pump: _Pump) -> float:
        min_gap = max(60.0, 32 * self.step)
        return min_gap + float(pump.anom.exponential(3600.0 / self.anomaly_rate))

    # -- simulation ------------------------------------------------------------------------

    def steps(self) -> Iterator[list[SimReading]]:
        """Readings of every device, one list per time step, forever (stop when you like)."""
        k = 0
        while True:
            ts = self.start_ts + k * self.step
            supply = self._supply(ts)
            yield [self._read(pump, k, ts, supply) for pump in self._pumps]
            k += 1

    def _supply(self, ts: float) -> float:
        # One feeder for the whole fleet: lower at the evening peak, grid noise on top.
        z = float(self._grid_rng.standard_normal())
        self._grid_ou = _ou(self._grid_ou, self.step, 120.0, 1.0, z)
        phase = 2 * math.pi * ((ts % self.day) / self.day - 3 / 24)
        return 400.0 * (1.0 + 0.008 * math.cos(phase)) + (self._grid_ou)

    def _speed(self, pump: _Pump, ts: float) -> float:
        while ts >= pump.next_switch:  # the drive moves to another load level
            pump.level_from = pump.level_to
            others = [lv for lv in pump.levels if lv != pump.level_to]
            pump.level_to = float(pump.phys.choice(others))
            pump.ramp_start = pump.next_switch
            pump.ramp_len = float(pump.phys.uniform(8, 25))
            pump.next_switch += max(60.0, float(pump.phys.exponential(pump.p["dwell"])))
        x = _smoothstep((ts - pump.ramp_start) / pump.ramp_len)
        return pump.level_from + (pump.level_to - pump.level_from) * x

    def _read(self, pump: _Pump, k: int, ts: float, supply: float) -> SimReading:
        if pump.row >= _BLOCK:
            pump.noise, pump.row = pump.phys.standard_normal((_BLOCK, 9)), 0
        z = pump.noise[pump.row]
        pump.row += 1
        p, dt = pump.p, self.step
        day = self.day
        tod = ts % day
        speed = self._speed(pump, ts)
        pump.ou_demand = _ou(pump.ou_demand, dt, 15.0, 0.02, float(z[6]))
        pump.ou_vib = _ou(pump.ou_vib, dt, 3.0, 0.05, float(z[7]))
        pump.ou_alt = _ou(pump.ou_alt, dt, 15.0, 0.02, float(z[8]))
        # Demand peaks at 1 (rated) in the afternoon and falls by 2 * d_amp at night.
        demand = 1.0 - p["d_amp"] * (1.0 - math.cos(2 * math.pi * (tod - p["d_peak"]) / day))
        load = speed * demand * (1.0 + pump.ou_demand)

        act = self._activate(pump, k, ts, load)
        flow = p["q_rated"] * load
        pressure = p["p_static"] + p["p_dyn"] * load * load
        current_load, friction = load, 0.0
        if act is not None and act.event.kind == "decorrelation":
            # A worn impeller / dragging bearing: current no longer tracks the hydraulic load.
            current_load = act.frozen_load * (1.0 + pump.ou_alt)
            friction = act.offset
        current = self._hydraulic_current(p, current_load, supply) + p["i0"] + friction
        if self.drift:
            wear = self.drift * max(0.0, ts - self.start_ts) / day
            pressure *= 1.0 - 0.5 * wear
            current *= 1.0 + wear
        voltage = supply - p["r_drop"] * current
        ambient = p["t_mean"] + p["t_amp"] * math.cos(2 * math.pi * (tod - p["t_peak"]) / day)
        t_ss = ambient + p["k_heat"] * current * current
        if math.isnan(pump.temp):
            pump.temp = t_ss
        pump.temp += (t_ss - pump.temp) * (1.0 - math.exp(-dt / p["tau_temp"]))
        vibration = p["vib_base"] * (0.3 + 0.7 * speed * speed) * (1.0 + pump.ou_vib)
        if self.drift:
            vibration *= 1.0 + 2.0 * self.drift * max(0.0, ts - self.start_ts) / day

        true = np.array([flow, pressure, current, pump.temp, vibration, voltage])
        noise_mult = np.ones(6)
        offset = np.zeros(6)
        if act is not None and act.event.kind in ("spike", "level_shift", "noise_burst", "drift"):
            noise_mult[act.channel] = act.noise_mult
            frac = 1.0
            if act.event.kind == "drift":
                frac = (k - act.start_k + 1) / (act.end_k - act.start_k)
            offset[act.channel] = act.offset * frac
        x = pump.gain * true + pump.bias + z[:6] * pump.sigma * noise_mult + offset
        x = np.round(x / _QUANTUM) * _QUANTUM
        x = np.where(_NONNEG, np.maximum(x, 0.0), x)
        if act is not None and act.event.kind == "stuck":
            x[act.channel] = act.held
        pump.last = x
        values = {f: round(float(v), d) for f, v, d in zip(FEATURES, x, _DECIMALS, strict=True)}
        return SimReading(pump.name, round(ts, 6), values)

    def _activate(self, pump: _Pump, k: int, ts: float, load: float) -> _Active | None:
        if pump.active is not None and k >= pump.active.end_k:
            pump.active = None
            pump.next_event = ts + self._gap(pump)
        if pump.active is None and ts >= pump.next_event and self.anomaly_rate > 0:
            pump.active = self._schedule(pump, k, ts, load)
            self.truth.append(pump.active.event)
            if self._on_event is not None:
                self._on_event(pump.active.event)
        return pump.active

    def _schedule(self, pump: _Pump, k: int, ts: float, load: float) -> _Active:
        rng, m = pump.anom, self.magnitude
        kind = str(rng.choice(self.kinds))
        channel = FEATURES.index("current") if kind == "decorrelation" else int(rng.integers(6))
        sign = float(rng.choice([-1.0, 1.0]))
        if kind == "spike" and FEATURES[channel] == "vibration":
            sign = 1.0  # an impact; a negative spike would clip at zero
        if kind == "spike":
            n = int(rng.integers(1, 4))
        else:
            lo, hi, fewest = _DURATION[kind]
            n = max(fewest, math.ceil(float(rng.uniform(lo, hi)) / self.step))
        size, noise_mult, held, frozen = 0.0, 1.0, 0.0, 0.0
        if kind == "spike":
            size = sign * float(rng.uniform(8, 12)) * m
        elif kind == "level_shift":
            size = sign * float(rng.uniform(4, 6)) * m
        elif kind == "drift":
            size = sign * float(rng.uniform(6, 10)) * m
        elif kind == "noise_burst":
            noise_mult = size = 1.0 + (float(rng.uniform(8, 10)) - 1.0) * m
        elif kind == "stuck":
            held = float(pump.last[channel])
        else:  # decorrelation
            size = float(rng.uniform(1, 2)) * m
            frozen = load
        event = AnomalyEvent(
            device=pump.name,
            kind=kind,
            features=(FEATURES[channel],),
            start=round(ts, 6),
            end=round(self.start_ts + (k + n) * self.step, 6),
            magnitude=round(size, 3),
        )
        offset = 0.0 if kind == "noise_burst" else size * float(pump.scale[channel])
        act = _Active(event, channel, k, k + n, offset, noise_mult, held, frozen)
        return act


# -- CLI: publish over MQTT ----------------------------------------------------------------


def parse_start(text: str) -> float:
    """Epoch seconds, or an ISO 8601 date-time (naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def encode(reading: SimReading, seq: int, fmt: str) -> bytes:
    """The MQTT payload of one reading: flat JSON with ts and seq, or a SenML pack."""
    if fmt == "senml":
        pack: list[dict[str, Any]] = [
            {"n": f, "u": UNITS[f], "v": v} for f, v in reading.values.items()
        ]
        pack[0] = {"bn": f"{reading.device}:", "bt": reading.ts, **pack[0]}
        return json.dumps(pack, separators=(",", ":")).encode()
    return json.dumps(
        {"ts": reading.ts, "seq": seq, **reading.values}, separators=(",", ":")
    ).encode()


def default_start(limit: int | None, step: float, rate: float, now: float) -> float:
    """The first timestamp when none is given: ``now``, or as long before it as the
    simulated clock will have run ahead of the wall clock by the end of the run (``limit``
    steps of ``step`` simulated seconds, ``rate`` steps per wall second, 0 = at once). A
    daemon refuses readings from the future (``ingest.max_future_skew``); a run without a
    limit that is faster than real time gets there anyway."""
    if limit is None:
        return float(round(now))
    wall = limit / rate if rate > 0 else 0.0
    return float(round(now - max(0.0, limit * step - wall)))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m simulators.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="wall-clock readings per second per device; 0 = as fast as possible",
    )
    ap.add_argument("--duration", type=float, default=None, help="wall-clock seconds to run")
    ap.add_argument("--steps", type=int, default=None, help="exact readings per device")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--truth", type=Path, default=None, help="ground truth JSONL file")
    ap.add_argument("--summary", type=Path, default=None, help="counts JSON file")
    ap.add_argument("--topic", default="plant/{device}/pump")
    ap.add_argument("--format", choices=("json", "senml"), default="json")
    ap.add_argument(
        "--step",
        type=float,
        default=None,
        help="simulated seconds per reading (default 1/rate, or 1 at rate 0)",
    )
    ap.add_argument(
        "--start",
        type=parse_start,
        default=None,
        help="first timestamp, epoch seconds or ISO 8601 (default: now, or as much earlier "
        "as a run faster than real time will get ahead of the clock, so that its last "
        "reading is not from the future)",
    )
    ap.add_argument("--anomaly-rate", type=float, default=2.0, help="per device per hour")
    ap.add_argument("--warmup", type=float, default=600.0, help="simulated seconds")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--magnitude", type=float, default=1.0)
    ap.add_argument(
        "--day-length",
        type=float,
        default=DAY,
        help="period of the daily cycles in simulated seconds (default 86400; compress it "
        "so that a short clean warm-up covers a whole day)",
    )
    ap.add_argument(
        "--drift",
        type=float,
        default=0.0,
        help="slow concept drift: pump wear per simulated day (e.g. 0.03), default 0",
    )
    ap.add_argument(
        "--spread",
        action="store_true",
        help="publish a step's readings evenly over its period (devices whose clocks are not "
        "in step), not all at once",
    )
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    ap.add_argument("--username", default=None, help="password from SENTINEL_SIM_PASSWORD")
    ap.add_argument(
        "--ack-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the broker to acknowledge the last publishes",
    )
    args = ap.parse_args(argv)
    if args.rate < 0 or args.devices < 1:
        ap.error("--rate must be >= 0 and --devices >= 1")
    if "{device}" not in args.topic:
        ap.error("--topic needs a {device} placeholder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    step = args.step if args.step is not None else (1.0 / args.rate if args.rate > 0 else 1.0)
    limit = args.steps
    if limit is None and args.duration is not None and args.rate > 0:
        limit = max(1, round(args.duration * args.rate))
    start = args.start
    if start is None:
        start = default_start(limit, step, args.rate, time.time())
    truth_file = args.truth.open("w", encoding="utf-8") if args.truth else None

    def record(event: AnomalyEvent) -> None:
        if truth_file is not None:
            truth_file.write(event.to_json() + "\n")
            truth_file.flush()

    try:
        sim = FleetSimulator(
            args.devices,
            args.seed,
            step,
            start_ts=start,
            anomaly_rate=args.anomaly_rate,
            warmup=args.warmup,
            kinds=kinds,
            magnitude=args.magnitude,
            day_length=args.day_length,
            on_event=record,
            drift=args.drift,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        pub = Publisher(
            args.broker,
            protocol=args.protocol,
            username=args.username,
            password=os.environ.get("SENTINEL_SIM_PASSWORD"),
            client_id=f"sim-fleet-{args.seed}-{os.getpid()}",
            window=PUBLISH_WINDOW,
        )
        pub.start()
    except (ConnectionError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    counts = dict.fromkeys(sim.devices, 0)
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration is not None and limit is None else math.inf
    last_ts = None
    try:
        for k, readings in enumerate(sim.steps()):
            if stop.is_set() or (limit is not None and k >= limit):
                break
            if args.rate > 0:
                # A fixed schedule from t0: late steps catch up, nothing drifts.
                wait = t0 + k / args.rate - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            elif time.monotonic() >= deadline:
                break
            for i, reading in enumerate(readings):
                if args.spread and args.rate > 0 and i:
                    # Devices whose clocks are not in step: spread over the step's period.
                    wait = t0 + (k + i / len(readings)) / args.rate - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                seq = counts[reading.device]
                pub.publish(
                    args.topic.replace("{device}", reading.device),
                    encode(reading, seq, args.format),
                    args.qos,
                )
                counts[reading.device] = seq + 1
            last_ts = readings[0].ts
        unacked = pub.finish(args.ack_timeout)
    finally:
        if truth_file is not None:
            truth_file.close()
    summary = {
        "devices": args.devices,
        "seed": args.seed,
        "step": step,
        "start_ts": start,
        "last_ts": last_ts,
        "published": counts,
        "total": sum(counts.values()),
        "unacknowledged": unacked,
        "anomalies": len(sim.truth),
        "wall_seconds": round(time.monotonic() - t0, 3),
    }
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: summary[k] for k in ("total", "unacknowledged", "anomalies")}))
    return 1 if unacked else 0


if __name__ == "__main__":
    sys.exit(main())
