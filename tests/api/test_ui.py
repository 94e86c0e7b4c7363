"""The web UI in a real headless chromium against a daemon fed by the simulated fleet.

The untrained test model finds the fleet anomalous, so the daemon opens alerts of its own
while the page is open: the test watches one appear, acknowledges it through the page
(the token asked once, in the page's dialog) and finds it acknowledged in the database.
Then the device's chart, the fleet, a model activated and rolled back from the page, and
a phone-sized window. With ``SENTINEL_UI_SCREENSHOTS=<folder>`` it saves what it saw there
(docs/ui*.png come from benchmarks/ui_screenshot.py, with a trained model).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from sentinel.model import ModelRegistry
from sentinel.store import AlertStore
from simulators.broker import PrivateBroker
from tests.api.helpers import TOKEN, Api, start_api
from tests.api.ui_helpers import browser, chromium_missing, console, until
from tests.e2e_helpers import all_alerts, readings_committed, wait_for
from tests.ops_helpers import VERSION, install_untrained_model, publish_fleet

pytestmark = [pytest.mark.integration]

SCREENSHOTS_ENV = "SENTINEL_UI_SCREENSHOTS"
XSS = '<img src=x id="xss" onerror="document.title=1">'


@pytest.fixture
def ui_api(
    tmp_path: Path, mqtt_broker: PrivateBroker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    if (reason := chromium_missing()) is not None:
        pytest.skip(reason)  # a failure under SENTINEL_REQUIRE_INTEGRATION=1 (tests/conftest.py)
    url = f"sqlite:///{tmp_path / 'state' / 'sentinel.db'}"
    yield from start_api(tmp_path, mqtt_broker, url, monkeypatch)


def _card(driver: WebDriver, device: str, status: str = "open") -> list[str]:
    """The ids of the alert cards of ``device`` with ``status`` on the alerts page."""
    return [
        str(card.get_attribute("data-alert"))
        for card in driver.find_elements(By.CSS_SELECTOR, f'#open-alerts [data-status="{status}"]')
        if card.find_element(By.CSS_SELECTOR, ".head a").text == device
    ]


def _acknowledged(url: str, alert_id: int) -> bool:
    store = AlertStore(url)
    store.open()
    try:
        record = store.get_alert(alert_id)
    finally:
        store.close()
    return record is not None and record.acknowledged_at is not None


def _confirm(driver: WebDriver) -> None:
    """Accept the page's confirm() box."""
    WebDriverWait(driver, 30).until(expected_conditions.alert_is_present()).accept()


def _save(driver: WebDriver, name: str) -> None:
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(folder) / name))


def test_an_alert_appears_and_is_acknowledged_from_the_page(ui_api: Api) -> None:
    base = str(ui_api.client.base_url).rstrip("/")
    seeded = {a.uid: a.id for a in all_alerts(ui_api.url)}
    # A note with markup: the page must show it as text, never as markup.
    with ui_api.write() as writer:
        noted = writer.post(f"/api/v1/alerts/{seeded['a-3']}/ack", json={"note": XSS})
        assert noted.status_code == 200, noted.text

    def h1() -> str:
        return str(driver.find_element(By.TAG_NAME, "h1").text)

    def found(css: str) -> list[WebElement]:
        return driver.find_elements(By.CSS_SELECTOR, css)

    with browser() as driver:
        driver.get(base + "/")  # redirected to /ui/
        until(driver, "the alerts page", lambda: "Open alerts" in h1())
        assert driver.current_url.startswith(base + "/ui/")
        until(driver, "the seeded open alert", lambda: _card(driver, "p1"))
        note = until(
            driver,
            "the acknowledged alert's note",
            lambda: [p for p in found(".card p") if "note:" in p.text],
        )
        assert XSS in note[0].text
        assert driver.find_elements(By.ID, "xss") == []

        # The fleet: the daemon opens alerts of its own, and the page shows them unasked.
        broker = ui_api.running.app.config.mqtt
        sent = publish_fleet(f"mqtt://{broker.host}:{broker.port}", broker.protocol, 2, steps=150)
        wait_for(lambda: readings_committed(ui_api.url) == sent, 60, "readings committed")
        fired = until(driver, "an alert of pump-000", lambda: _card(driver, "pump-000"))
        alert_id = int(fired[0])
        card = f'[data-alert="{alert_id}"]'
        reason = driver.find_element(By.CSS_SELECTOR, f"{card} .why").text
        assert "\u00d7 threshold" in reason, reason  # a multiplication sign
        _save(driver, "ui.png")

        # Acknowledge: the token is asked once, then kept for the tab.
        driver.find_element(By.CSS_SELECTOR, f"{card} .actions button").click()
        dialog = until(
            driver, "the token dialog", lambda: driver.find_element(By.ID, "token-dialog")
        )
        until(driver, "the dialog open", lambda: dialog.get_attribute("open") is not None)
        driver.find_element(By.ID, "token-input").send_keys(TOKEN)
        driver.find_element(By.ID, "token-save").click()
        wait_for(lambda: _acknowledged(ui_api.url, alert_id), 30, "the acknowledgement stored")
        until(driver, "the card acknowledged", lambda: _card(driver, "pump-000", "acknowledged"))
        assert driver.execute_script("return sessionStorage.getItem('sentinel.token')") == TOKEN

        # The next action sends the kept token without asking.
        found(f'[data-alert="{seeded["a-1"]}"] .actions button')[0].click()
        wait_for(lambda: _acknowledged(ui_api.url, seeded["a-1"]), 30, "the second acknowledgement")
        assert driver.find_element(By.ID, "token-dialog").get_attribute("open") is None

        # The device: score vs threshold per minute, the alert shaded.
        driver.get(base + "/ui/#/device/pump/pump-000")
        until(driver, "the score chart", lambda: found("#score-chart path.score"))
        assert found("#score-chart path.threshold")
        assert found("#score-chart rect.span")
        _save(driver, "ui-device.png")

        # The fleet at a glance.
        driver.get(base + "/ui/#/fleet")
        rows = until(driver, "the fleet table", lambda: found("#fleet tbody tr"))
        assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["pump-000", "pump-001"]
        assert "alerting" in rows[0].text

        # Models: activate another version, then roll back, each confirmed in the page.
        config = ui_api.running.app.config
        registry = ModelRegistry(config.models_dir)
        second = install_untrained_model(config.state_dir, "20250102T000000Z-second")
        registry.activate("pump", VERSION)  # VERSION runs; `second` is the rollback target
        driver.get(base + "/ui/#/models")
        row = until(
            driver, "the second version", lambda: [r for r in found("tbody tr") if second in r.text]
        )
        row[0].find_element(By.TAG_NAME, "button").click()
        _confirm(driver)
        wait_for(lambda: registry.active_version("pump") == second, 30, "the activation")
        back = until(
            driver,
            "the rollback button",
            lambda: [b for b in found("h2 button") if VERSION in b.text],
        )
        back[0].click()
        _confirm(driver)
        wait_for(lambda: registry.active_version("pump") == VERSION, 30, "the rollback")

        # A phone: one column, nothing wider than the screen.
        driver.set_window_size(390, 844)
        driver.get(base + "/ui/#/alerts")
        until(driver, "the alerts on a phone", lambda: _card(driver, "p3", "acknowledged"))
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        _save(driver, "ui-phone.png")
        errors = [e for e in console(driver) if e.get("level") == "SEVERE"]
        assert errors == [], errors
