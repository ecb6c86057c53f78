"""A real headless Chromium for the dashboard tests and the docs' screenshot.

We drive Debian's ``/usr/bin/chromium`` (installed by ``scripts/install-browser``) rather than a
browser downloaded by ``playwright install``: build machines often cannot download one, and
the system package gets security updates with the OS.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_available() -> bool:
    return CHROMIUM.exists() or shutil.which("chromium") is not None


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
