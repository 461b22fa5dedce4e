"""Headless Chromium driven by selenium, as tests/cloud_service/test_dashboard.py drives it: the
flags a root user in a container needs, a fresh profile each time, the Debian chromedriver."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900", "--disable-dev-shm-usage")


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    raise RuntimeError("headless Chromium is not installed (apt-get install -y chromium chromium-driver)")


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A selenium ``webdriver.Chrome`` on headless Chromium with a throw-away profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="edge-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_binary()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
