"""The command-level check (``sentinel.judge.command_levels``, issue #21): a channel that
settles away from the level its last command sets, though that level is a normal one of
another command's, is a broken relation; a channel the commands do not set is not judged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import CommandLevelsConfig, SpikesConfig, ThresholdConfig
from sentinel.judge.command_levels import CommandLevelCheck
from sentinel.judge.spikes import SpikeCheck
from sentinel.judge.threshold import ThresholdBank
from sentinel.model.calibration import Calibration
from sentinel.records import RelationHit, Score, Verdict, Window
from sentinel.worker.pipeline import Pipeline
from sentinel.worker.snapshots import ThresholdSnapshots
from tests.fakes import FakeDetector

LEVELS = (-1.0, 0.2, 0.8)
COMMANDS = (1, 2, 3)  # one-hot command channels after the telemetry channel
LENGTH, HOP = 32, 4


def telemetry(
    sends: int, *, wrong: int | None = None, offset: float = 0.6, apart: int = 60, seed: int = 0
) -> tuple[np.ndarray, list[int]]:
    """A channel moved among three levels by one-reading command pulses, every ``apart``
    readings, the commands in turn; after send ``wrong`` it settles ``offset`` away (0.2
    + 0.6 is the third command's level). (readings, the reading index of each send)"""
    rng = np.random.default_rng(seed)
    rows = (sends + 1) * apart
    values = np.zeros((rows, 4))
    target = np.full(rows, LEVELS[0])
    at: list[int] = []
    for k in range(sends):
        start = (k + 1) * apart
        command = (k + 1) % 3
        values[start, 1 + command] = 1.0
        target[start:] = LEVELS[command] + (offset if k == wrong else 0.0)
        at.append(start)
    level = target[0]
    for i in range(rows):  # a first-order lag of 4 readings
        level += (target[i] - level) / 4
        values[i, 0] = level + rng.normal(0.0, 0.03)
    return values, at


def judge(
    check: CommandLevelCheck, values: np.ndarray, device: str = "sat-1"
) -> list[tuple[int, RelationHit]]:
    """Each window as the assembler makes them; (index of its newest reading, hit)."""
    hits = []
    for end in range(LENGTH, len(values) + 1, HOP):
        window = values[end - LENGTH : end][None]
        (hit,), _ = check.check("telemetry", [device], window, COMMANDS)
        if hit is not None:
            hits.append((end - 1, hit))
    return hits


def test_a_channel_at_another_commands_level_is_judged_until_the_next_command() -> None:
    values, sends = telemetry(15, wrong=10)
    check = CommandLevelCheck(CommandLevelsConfig(), HOP)
    hits = judge(check, values)
    assert hits, "the wrong level went unseen"
    assert {hit.feature for _, hit in hits} == {0}
    start, end = sends[10], sends[11]
    assert all(start < at <= end + LENGTH for at, _ in hits), (hits, start, end)
    # from the settled readings on, as long as the level stays wrong
    assert hits[0][0] <= start + 16 + 8 + HOP
    assert hits[-1][0] >= end - HOP
    assert min(hit.z for _, hit in hits) > CommandLevelsConfig().k


def test_the_same_sends_at_their_own_levels_raise_nothing() -> None:
    for seed in range(5):
        values, _ = telemetry(30, seed=seed)
        assert judge(CommandLevelCheck(CommandLevelsConfig(), HOP), values) == []


def test_a_send_is_judged_only_after_min_sends_records_of_it() -> None:
    # the second send of command 2 (sends 1, 4, 7, ... are its) is already wrong
    values, _ = telemetry(6, wrong=4)
    assert judge(CommandLevelCheck(CommandLevelsConfig(), HOP), values) == []
    relaxed = CommandLevelCheck(CommandLevelsConfig(min_sends=2), HOP)
    values, _ = telemetry(9, wrong=7)
    assert judge(relaxed, values)


def test_a_channel_the_commands_do_not_set_is_not_judged() -> None:
    # the same pulses beside a channel wandering on its own: a slow cycle and noise
    values, sends = telemetry(30)
    rows = np.arange(len(values))
    noise = np.random.default_rng(1).normal(0.0, 0.03, len(rows))
    values[:, 0] = np.sin(2 * np.pi * rows / 97) + noise
    values[sends[20] :, 0] += 0.6  # a shift the command check has no say in
    assert judge(CommandLevelCheck(CommandLevelsConfig(), HOP), values) == []


def test_a_cycle_beside_the_commands_is_not_judged_where_it_happens_to_be_still() -> None:
    # an orbit's cycle of 90 readings: still only at its peaks and troughs, where a few
    # records of one send can agree by chance (rare_commands seed 4 raised seven alerts)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        values, _ = telemetry(80, apart=int(rng.integers(150, 400)), seed=seed)
        rows = np.arange(len(values))
        values[:, 0] = np.sin(2 * np.pi * rows / 90) + rng.normal(0.0, 0.05, len(rows))
        assert judge(CommandLevelCheck(CommandLevelsConfig(), HOP), values) == [], seed


def test_a_response_that_changed_for_good_is_learnt() -> None:
    values, sends = telemetry(60)
    # from send 21 on, the channel settles 0.3 higher after every command
    shifted, _ = telemetry(60, offset=0.0)
    for k, start in enumerate(sends):
        if k >= 21:
            end = sends[k + 1] if k + 1 < len(sends) else len(values)
            shifted[start + 8 : end, 0] += 0.3
    hits = judge(CommandLevelCheck(CommandLevelsConfig(), HOP), shifted)
    assert hits, "the change went unseen"
    late = [at for at, _ in hits if at > sends[45]]
    assert late == [], "a response that stayed changed kept alerting"


def test_a_pulse_ending_is_not_a_send_and_devices_are_apart() -> None:
    values, _ = telemetry(15, wrong=10)
    check = CommandLevelCheck(CommandLevelsConfig(), HOP)
    clean, _ = telemetry(15, seed=3)
    assert judge(check, clean, device="sat-2") == []
    assert judge(check, values, device="sat-1")
    # each pulse made one send, its end none: records per command, none for rest values
    state = check._devices[("telemetry", "sat-1")]
    assert sorted(state.records) == [((c, 1.0),) for c in COMMANDS]


def test_off_and_without_commands_nothing_is_judged() -> None:
    values, _ = telemetry(15, wrong=10)
    off = CommandLevelCheck(CommandLevelsConfig(enabled=False), HOP)
    assert judge(off, values) == []
    check = CommandLevelCheck(CommandLevelsConfig(), HOP)
    window = values[:LENGTH][None]
    assert check.check("telemetry", ["sat-1"], window, ()) == ([None], [()])


def test_a_channel_still_approaching_its_level_is_not_judged() -> None:
    # a set point's temperature: a lag of 20 readings, longer than settle, so the level
    # 16-48 readings after a step depends on where the step came from
    rng = np.random.default_rng(4)
    points = (40.0, 45.0, 50.0, 55.0)
    rows, at, level = 6000, 0, 50.0
    values = np.zeros((rows, 2))
    while at < rows:
        length = int(rng.integers(150, 400))
        values[at : at + length, 1] = level
        at += length
        level = float(rng.choice([v for v in points if v != level]))
    temperature = values[0, 1]
    for i in range(rows):
        temperature += (values[i, 1] - temperature) / 20
        values[i, 0] = temperature + rng.normal(0.0, 0.1)
    check = CommandLevelCheck(CommandLevelsConfig(), HOP)
    hits = []
    for end in range(LENGTH, rows + 1, HOP):
        (hit,), _ = check.check("hvac", ["ahu-1"], values[end - LENGTH : end][None], (1,))
        if hit is not None:
            hits.append(end)
    assert hits == []
    # the records were taken, and none of them counted as settled
    state = check._devices[("hvac", "ahu-1")]
    records = [r for past in state.records.values() for r in past]
    assert len(records) > 10
    assert all(np.isnan(r.level[0]) for r in records)


def judge_from(
    check: CommandLevelCheck, values: np.ndarray, start: int, device: str = "sat-1"
) -> list[tuple[int, RelationHit]]:
    """``judge`` on the windows whose newest reading is at or after ``start``."""
    hits = []
    for end in range(start + 1, len(values) + 1, HOP):
        (hit,), _ = check.check("telemetry", [device], values[end - LENGTH : end][None], COMMANDS)
        if hit is not None:
            hits.append((end - 1, hit))
    return hits


def test_thresholds_json_carries_the_records_across_a_restart(tmp_path: Path) -> None:
    values, sends = telemetry(15, wrong=10)
    before = CommandLevelCheck(CommandLevelsConfig(), HOP)
    restart = sends[9] + LENGTH  # windows up to here hold sends 0-8 and the start of 9
    judge(before, values[:restart])
    path = tmp_path / "thresholds.json"
    spikes = SpikeCheck(SpikesConfig(), HOP)
    ThresholdSnapshots(path, ThresholdBank(ThresholdConfig()), spikes, command_levels=before).save(
        {"telemetry": "v1"}
    )
    saved = json.loads(path.read_text())["streams"]["telemetry"]["command_levels"]
    assert set(saved) == {"sat-1"}
    after = CommandLevelCheck(CommandLevelsConfig(), HOP)
    ThresholdSnapshots(
        path, ThresholdBank(ThresholdConfig()), spikes, command_levels=after
    ).restore({"telemetry": ("v2", 4)})  # another model: the records are the device's
    hits = judge_from(after, values, restart)
    assert hits
    assert all(sends[10] < at <= sends[11] + LENGTH for at, _ in hits)
    # without them, send 10 is the first of its command the restarted check sees
    assert judge_from(CommandLevelCheck(CommandLevelsConfig(), HOP), values, restart) == []
    broken = json.loads(json.dumps(saved))
    broken["sat-1"]["judged"] = [0, 4]
    with pytest.raises(ValueError, match="do not fit"):
        CommandLevelCheck(CommandLevelsConfig(), HOP).restore("telemetry", broken)


def test_a_parked_device_keeps_its_records_and_other_commands_drop_them() -> None:
    values, sends = telemetry(15, wrong=10)
    check = CommandLevelCheck(CommandLevelsConfig(), HOP)
    restart = sends[9] + LENGTH
    judge(check, values[:restart])
    assert check.park(set()) == 1
    assert judge_from(check, values, restart)  # taken back when it returns
    # a model whose command channels differ judges other features: records dropped
    check.park(set())
    window = values[restart - LENGTH : restart][None]
    check.check("telemetry", ["sat-1"], window, (1, 2))
    assert check._devices[("telemetry", "sat-1")].records == {}


def held_by_window(
    check: CommandLevelCheck, values: np.ndarray, device: str = "sat-1"
) -> dict[int, tuple[int, ...]]:
    """Each window's held features (``check``'s second list), by its newest reading."""
    out = {}
    for end in range(LENGTH, len(values) + 1, HOP):
        _, (held,) = check.check("telemetry", [device], values[end - LENGTH : end][None], COMMANDS)
        out[end - 1] = held
    return out


def test_a_channel_at_its_commands_level_is_held_there_and_a_wrong_one_is_not() -> None:
    values, sends = telemetry(15, wrong=10)
    held = held_by_window(CommandLevelCheck(CommandLevelsConfig(), HOP), values)
    # before a command has min_sends records, nothing is held
    assert all(held[at] == () for at in held if at < sends[3])
    # a window wholly after a known send, the channel settled at its level: held
    late = [at for at in held if sends[12] + LENGTH <= at < sends[13]]
    assert late
    assert all(held[at] == (0,) for at in late)
    # a window holding the next send's reading: what the windows before it held
    straddling = [at for at in held if sends[13] <= at < sends[13] + LENGTH - 1]
    assert all(held[at] == (0,) for at in straddling)
    # at the wrong level nothing is, nor in the windows that hold the next send after it
    wrong = [at for at in held if sends[10] + LENGTH - 1 <= at < sends[11] + LENGTH - 1]
    assert wrong
    assert all(held[at] == () for at in wrong)


class Missed(FakeDetector):
    """A forecaster whose errors (``step_ratios``) over a window's newest 16 readings are
    all on the telemetry channel (feature 0)."""

    def __init__(self) -> None:
        super().__init__()
        self._meta = replace(
            self._meta,
            features=("value", "cmd_a", "cmd_b", "cmd_c"),
            window=LENGTH,
            calibration=Calibration({"0.995": 1.0}, 1.0, (0.0, 0.0, 0.0, 0.0)),
        )

    def step_ratios(self, windows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(windows), 16, 4))
        out[:, :, 0] = 5.0
        return out


def test_the_pipeline_reads_a_score_on_a_held_channel_as_its_commands() -> None:
    """A score excess on a channel held at its command's level (a level the training never
    saw, after its command's earlier sends) is the command's: ``Verdict.response``, which
    opens no alert; on another channel, or not held, it is not."""
    values, _ = telemetry(4)
    window = Window("telemetry", "sat-1", 0.0, 31.0, values[-LENGTH:].astype(np.float32))
    score = Score(window, 5.0, (5.0, 0.0, 0.0, 0.0), "v1")
    anomalous = Verdict(score, threshold=1.0, is_anomaly=True)

    def judged(held: tuple[int, ...]) -> Verdict:
        (out,) = Pipeline._with_evidence(
            Missed(), values[-LENGTH:][None], [anomalous], [None], held=[held]
        )
        return out

    assert judged((0,)).response
    assert not judged(()).response
    assert not judged((2,)).response
