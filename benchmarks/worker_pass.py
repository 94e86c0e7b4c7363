"""The pipeline worker alone, in process: readings/s it judges, and a digest of its verdicts.

What ``throughput.py --batched`` runs through MQTT and the database, without them: the same
messages (``--devices`` simulated pumps, arrays of ``--batch`` readings, seed 7), the same
model (the e2e helpers' LSTM autoencoder, window 16, hop 4) and config, parsed by the
daemon's ``MessageParser`` and handed to ``Pipeline.process`` in passes of
``--pass-size`` messages (256, the worker's own bound; a daemon that keeps up takes
fewer), with a sink that keeps nothing. Printed, from one run:

* parse: µs per reading of ``MessageParser.parse`` (the network thread's share);
* worker: readings/s of ``Pipeline.process`` (windows, model, checks, thresholds, alerts);
* worker CPU: the process's CPU time per reading over the same runs (median): steadier
  than readings/s where other work shares the machine;
* model alone: readings/s of ``detector.score`` over the same windows, passes of 4,096;
* digest (one more, untimed run): a SHA-256 over every verdict and alert change (scores,
  thresholds, hits, exceedances, evidence; alert uids and the config's hash left out, they
  differ from run to run). A change meant as a pure speed-up must leave it unchanged.

``--profile N`` prints cProfile's top N functions of one more worker run by cumulative time
(the whole profile is kept in ``$TMPDIR/worker_pass.prof``).
Meant for comparing two trees back to back on a noisy machine; it is not the end-to-end
figure (that is ``throughput.py``).

    .venv/bin/python benchmarks/worker_pass.py [--devices 20] [--readings 200000]
        [--batch 100] [--repeat 3] [--pass-size 256] [--profile 40] [--models DIR]

``--warm STEPS`` judges as a daemon past its cold start does: the model trained on the
simulated fleet's own first STEPS readings a device (fault-free), the judge warmed with
them (``throughput.py``'s ``steady_state``); the timed readings follow them. Without it
the model is one of 4 other pumps and every device's judge starts cold, so about half of
the windows are judged anomalous and the checks that need a device's history (relations,
the spike check's memory) have little to do: neither is what a running daemon does
(docs/BENCHMARKS.md, "The worker in its steady state"). The last lines print the share.

``--models DIR`` keeps the trained model there on the first run and reuses it after, so
that two trees are compared on the very same model, and training is paid once.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throughput import (  # benchmarks/throughput.py: the same load
    model_ceiling,
    steady_state,
    workload,
)

from sentinel.config import SentinelConfig
from sentinel.ingest.parse import MessageParser
from sentinel.logs import configure_logging
from sentinel.model import ModelRegistry
from sentinel.records import Alert, Delivery, Verdict, WriteBatch
from sentinel.worker.pipeline import Pipeline
from tests.e2e_helpers import daemon_config, install_model, train_fleet_model


def _verdict_key(verdict: Verdict, alert: Alert | None) -> str:
    s = verdict.score
    alert_part = None
    if alert is not None:
        alert_part = (
            alert.status,
            alert.started_at,
            alert.updated_at,
            alert.ended_at,
            alert.peak_score,
            alert.threshold,
            alert.top_features,
            alert.windows,
            alert.severity,
            # the config hash names the temporary state_dir: not the same from run to run
            None if alert.reason is None else replace(alert.reason, config_hash=""),
        )
    return repr(
        (
            s.window.device,
            s.window.start_ts,
            s.window.end_ts,
            s.value,
            s.feature_errors,
            verdict.threshold,
            verdict.is_anomaly,
            verdict.exceedance,
            verdict.state,
            verdict.spike,
            verdict.level,
            verdict.constant,
            verdict.stuck,
            verdict.relation,
            verdict.recurring,
            verdict.evidence,
            alert_part,
        )
    )


JUDGED: Counter[bool] = Counter()  # windows of the digest run: anomalous (True) or not


def run_worker(
    config: SentinelConfig,
    models: Path,
    deliveries: list[Delivery],
    digest: bool,
    size: int,
    warm_state: Path | None = None,
) -> tuple[float, float, str]:
    """Seconds ``Pipeline.process`` took over ``deliveries``, the process's CPU seconds
    meanwhile, and the verdicts' digest; ``warm_state``: the judge's saved state to
    start from (``--warm``)."""
    detector = ModelRegistry(models).load_active(
        "pump", torch.device("cpu"), config.model.score_batch_max
    )
    assert detector is not None
    sha = hashlib.sha256()

    def observe(verdict: Verdict, alert: Alert | None) -> None:
        sha.update(_verdict_key(verdict, alert).encode())
        JUDGED[verdict.is_anomaly] += 1

    def sink(batch: WriteBatch) -> None:
        pass

    pipeline = Pipeline(
        config,
        sink=sink,
        request_training=lambda job: None,
        models={"pump": detector},
        observer=observe if digest else None,
        cold_start_buffer=False,
        snapshot_path=warm_state,
    )
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(deliveries), size):
        pipeline.process(deliveries[i : i + size])
    return time.perf_counter() - started, time.process_time() - cpu, sha.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--readings", type=int, default=200_000, help="in all")
    ap.add_argument("--batch", type=int, default=100, help="readings per message")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pass-size", type=int, default=256, help="deliveries per pass")
    ap.add_argument("--profile", type=int, default=0, help="print the top N by cumulative")
    ap.add_argument("--models", type=Path, help="reuse (or keep) the trained model here")
    ap.add_argument(
        "--warm",
        type=int,
        default=0,
        metavar="STEPS",
        help="judge as after the cold start: the model trained on the fleet's own first "
        "STEPS readings a device, the judge warmed with them (throughput.py --warm)",
    )
    args = ap.parse_args()
    configure_logging("warning", "console")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps = max(1, args.readings // args.devices)
        load = workload(args.devices, steps, seed=7, batch=args.batch, warm=args.warm)
        warm_state = None
        if args.warm:  # trained on the fleet's own readings and warmed, or reused
            models = steady_state(load, args.models or work / "steady")
            warm_state = models.parent / "thresholds.json"
        else:
            models = args.models or work / "models"
            # A directory without the pump stream's active model (new, or left empty) is
            # trained into; one that holds it is reused.
            if not models.exists() or ModelRegistry(models).active_version("pump") is None:
                train_fleet_model(models, devices=4, steps=1200)
        state = work / "state"
        install_model(models, state)
        broker = SimpleNamespace(host="127.0.0.1", port=1883, protocol="5")
        raw = daemon_config(state, broker, database_url=f"sqlite:///{state / 'x.db'}")
        raw["logging"]["level"] = "warning"
        config = SentinelConfig.model_validate(raw)
        n = load.reading_count
        parser = MessageParser(config.streams, max_payload_bytes=config.ingest.max_payload_bytes)
        parse_s, worker_s, cpu_s, model_s, digests = [], [], [], [], set()
        for _ in range(args.repeat):
            started = time.perf_counter()
            deliveries = []
            for topic, payload in load.messages:
                readings, rejected = parser.parse(topic, payload, 1.9e9)
                deliveries.append(Delivery(topic, tuple(readings), tuple(rejected), None, 0.0))
            parse_s.append(time.perf_counter() - started)
            assert sum(len(d.readings) for d in deliveries) == n
            wall, cpu, _ = run_worker(config, models, deliveries, False, args.pass_size, warm_state)
            worker_s.append(wall)
            cpu_s.append(cpu)
            model_s.append(model_ceiling(models, load, config.model.score_batch_max)[0])
        digests.add(run_worker(config, models, deliveries, True, args.pass_size, warm_state)[2])
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            run_worker(config, models, deliveries, False, args.pass_size, warm_state)
            profile.disable()
            stats = pstats.Stats(profile)
            stats.dump_stats(Path(tempfile.gettempdir()) / "worker_pass.prof")
            stats.sort_stats("cumulative").print_stats(args.profile)
    parse_us = 1e6 * statistics.median(parse_s) / n
    worker = n / statistics.median(worker_s)
    model = n / statistics.median(model_s)
    messages = len(load.messages)
    print(f"{n} readings, {args.devices} devices, {messages} messages, runs {args.repeat}")
    print(f"parse:       {parse_us:6.2f} µs a reading  runs {[round(x, 2) for x in parse_s]} s")
    print(f"worker:      {worker:9.0f} readings/s  runs {[round(x, 2) for x in worker_s]} s")
    cpu_us = 1e6 * statistics.median(cpu_s) / n
    print(f"worker CPU:  {cpu_us:6.2f} µs a reading  runs {[round(x, 2) for x in cpu_s]} s")
    print(f"model alone: {model:9.0f} readings/s  runs {[round(x, 2) for x in model_s]} s")
    print(f"worker + parse: {n / (statistics.median(worker_s) + statistics.median(parse_s)):9.0f}")
    print(f"digest: {' '.join(sorted(digests))}")
    windows = JUDGED[True] + JUDGED[False]
    print(f"windows judged anomalous: {JUDGED[True]} of {windows} ({JUDGED[True] / windows:.0%})")
    print(f"ratio: {worker / model:.3f} of the model ceiling (worker alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
