"""Debian's chromium, headless, driven by Selenium for the web UI's test and screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["CHROMEDRIVER", "CHROMIUM", "browser", "chromium_missing", "console", "until"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def chromium_missing() -> str | None:
    """Why the browser test cannot run here, or None (apt: chromium chromium-driver)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.access(path, os.X_OK) or shutil.which(os.path.basename(path))):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@contextmanager
def browser(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless chromium of the system's own; Selenium never downloads one."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The page's console messages and failed loads since the last call."""
    entries: list[dict[str, Any]] = driver.execute("getLog", {"type": "browser"})["value"]
    return entries


def until(
    driver: webdriver.Chrome, what: str, condition: Callable[[], T], timeout: float = 60
) -> T:
    """Wait for ``condition`` to return something truthy; the page redraws itself when its
    data changes, so an element found a moment ago may be gone: look again."""
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(StaleElementReferenceException,),
    )
    try:
        return wait.until(lambda _: condition(), message=f"waiting for {what}")
    except WebDriverException as err:
        logs = "\n".join(str(e.get("message")) for e in console(driver))
        raise AssertionError(f"{err.msg}\nbrowser console:\n{logs or '(empty)'}") from err
