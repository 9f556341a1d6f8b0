"""Headless Chromium for the report tests, driven by Selenium and the system's ChromeDriver.

No browser is downloaded: Debian's ``chromium`` and ``chromium-driver`` (or the paths in
NNCOMPILE_CHROMIUM / NNCOMPILE_CHROMEDRIVER) are used.  The flags keep Chromium off the
network entirely (no background requests, no component updates), in a fresh profile.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

INSTALL = ("headless Chromium not found: apt-get install chromium chromium-driver (Debian/Ubuntu; or set "
           "NNCOMPILE_CHROMIUM and NNCOMPILE_CHROMEDRIVER) and pip install selenium")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--window-size=1400,1000")


def executables() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either (or Selenium) is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    browser = os.environ.get("NNCOMPILE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("NNCOMPILE_CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start(browser: str, driver: str) -> object:
    """A new headless Chromium with console and network logging, in a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='nncompile-chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def requests(driver: object) -> list[str]:
    """URLs the page asked for since the last call (from Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
