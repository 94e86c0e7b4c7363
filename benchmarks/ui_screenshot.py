"""Screenshots of the web UI (docs/ui.png and its siblings) from a live daemon.

The web UI's test (tests/api/test_ui.py) runs an untrained model for speed, which finds
everything anomalous: fine for checking the page, a poor picture. This script reuses its
parts -- a private Mosquitto, the daemon in this process, Debian's headless chromium --
with a model trained on clean simulated pumps (tests.e2e_helpers.train_fleet_model), then
publishes an hour of a four-pump fleet with injected faults and photographs the alerts
page, the device page of the pump with the most alerts, and the alerts on a phone.

    .venv/bin/python benchmarks/ui_screenshot.py --out docs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from sentinel.records import AlertStatus
from simulators.broker import PrivateBroker, Publisher
from simulators.fleet import FleetSimulator, SimReading, encode
from tests.api.ui_helpers import browser, chromium_missing, until
from tests.e2e_helpers import (
    all_alerts,
    daemon_config,
    install_model,
    readings_committed,
    running_app,
    train_fleet_model,
    wait_for,
)

TOKEN = "screenshot-token"
TRAINING_SEED = 101  # tests.e2e_helpers.train_fleet_model's
START = 1_704_067_200.0  # FleetSimulator's default start, 2024-01-01T00:00:00Z


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3600, help="readings per pump, 1 s apart")
    parser.add_argument("--faults", type=float, default=3.0, help="per pump and hour")
    args = parser.parse_args()
    if (reason := chromium_missing()) is not None:
        print(reason, file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sentinel-ui-") as tmp:
        work = Path(tmp)
        train_fleet_model(work / "models", args.devices, args.steps)
        install_model(work / "models", work / "state")
        credentials = work / "credentials"
        credentials.mkdir()
        (credentials / "api_token").write_text(TOKEN + "\n")
        os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)
        url = f"sqlite:///{work / 'state' / 'sentinel.db'}"
        with PrivateBroker(workdir=work / "broker") as broker:
            config = daemon_config(work / "state", broker, database_url=url)
            with running_app(config) as running:
                server = running.app.health_server
                assert server is not None
                # The pumps it was trained on (train_fleet_model's seed), the hour after.
                sim = FleetSimulator(
                    args.devices,
                    seed=TRAINING_SEED,
                    start_ts=START + args.steps,
                    anomaly_rate=args.faults,
                    warmup=600.0,
                )
                publisher = Publisher(broker.url, protocol=broker.protocol)
                publisher.start()
                steps = sim.steps()
                sent = _publish(publisher, steps, args.steps, 0)
                wait_for(_committed(url, sent), 300, "readings committed")
                # Then a minute at a time until a fault is under way: the alerts page
                # should show an open alert, as it would when someone opens it.
                for _ in range(60):
                    if any(a.status == AlertStatus.OPEN for a in all_alerts(url)):
                        break
                    sent = _publish(publisher, steps, 60, sent)
                    wait_for(_committed(url, sent), 300, "readings committed")
                assert publisher.finish(60) == 0
                stored = all_alerts(url)
                alerts = Counter(a.device for a in stored)
                print(f"{sent} readings, alerts by device: {dict(alerts)}")
                # The device of the open alert (newest first), else the one with most.
                live = [a.device for a in stored if a.status == AlertStatus.OPEN]
                device = (live or [d for d, _ in alerts.most_common(1)] or sim.devices)[0]
                _photograph(f"http://127.0.0.1:{server.port}", device, args.out)
    return 0


def _committed(url: str, n: int) -> Callable[[], bool]:
    return lambda: readings_committed(url) == n


def _publish(publisher: Publisher, steps: Iterator[list[SimReading]], count: int, sent: int) -> int:
    for _, step in zip(range(count), steps, strict=False):
        for reading in step:
            publisher.publish(f"plant/{reading.device}/pump", encode(reading, sent, "json"))
            sent += 1
    return sent


def _drawn(driver: WebDriver, css: str) -> Callable[[], list[WebElement]]:
    return lambda: driver.find_elements(By.CSS_SELECTOR, css)


def _photograph(base: str, device: str, out: Path) -> None:
    """Each page, timed from the navigation until its content is drawn: the first loads
    the page, its files and its API answers; the others change only the URL's fragment
    (in-page routing: their API calls and the drawing)."""
    with browser() as driver:
        for name, path, ready in (
            ("ui.png", "/ui/#/alerts", ".card"),
            ("ui-device.png", f"/ui/#/device/pump/{device}/1h", "#score-chart"),
            ("fleet", "/ui/#/fleet", "#fleet tbody tr"),
            ("models", "/ui/#/models", "table"),
        ):
            started = time.perf_counter()
            driver.get(base + path)
            until(driver, name, _drawn(driver, ready))
            print(f"{path}: drawn {1000 * (time.perf_counter() - started):.0f} ms after navigation")
            if name.endswith(".png"):
                driver.save_screenshot(str(out / name))
        sizes = driver.execute_script(
            "return performance.getEntriesByType('resource').concat("
            "performance.getEntriesByType('navigation'))"
            ".map(e => [new URL(e.name).pathname, e.encodedBodySize])"
            ".filter(([path]) => path.startsWith('/ui/'))"
        )
        print("page weight, bytes:", dict(sizes))
        driver.set_window_size(390, 844)
        driver.get(base + "/ui/#/alerts")
        until(driver, "the alerts", lambda: driver.find_elements(By.CSS_SELECTOR, ".card"))
        driver.save_screenshot(str(out / "ui-phone.png"))
    print(f"saved {out}/ui.png, ui-device.png ({device}), ui-phone.png")


if __name__ == "__main__":
    sys.exit(main())
