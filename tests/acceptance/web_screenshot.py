"""The docs' screenshot: a dashboard with jobs in every state, taken in headless Chromium.

Regenerate ``docs/images/dashboard.png`` with::

    .venv/bin/python -m tests.acceptance.web_screenshot docs/images/dashboard.png

The browser tests run :func:`demo_site` too, so the screenshot's recipe cannot rot unnoticed.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conveyor import Conveyor, JobContext, JobState

from .web_browser import chromium
from .web_helpers import TOKEN, Stepper, running_worker, serving, wait_until


def register_demo_types(app: Conveyor) -> Stepper:
    """Job types that look like a real app's; returns the one the demo steps by hand."""

    @app.job("reports.generate")
    def generate(ctx: JobContext, month: str) -> dict[str, object]:
        ctx.progress(3, 3)
        return {"rows": 1284, "file": f"reports/{month}.csv"}

    @app.job("crm.sync", max_attempts=0)
    def sync(ctx: JobContext, account: str) -> None:
        raise ConnectionError("CRM API answered 503 Service Unavailable")

    @app.job("emails.send")
    def send(ctx: JobContext, to: str, template: str) -> None: ...

    return Stepper(app, "files.import")


def populate(app: Conveyor, files: Stepper) -> None:
    """Leave one job in each state: completed, failed, cancelled, paused, running, pending."""
    done = app.enqueue("reports.generate", {"month": "2026-09"})
    failed = app.enqueue("crm.sync", {"account": "acme-corp"})
    wait_until(lambda: app.get(done.id).is_terminal and app.get(failed.id).is_terminal,
               message="the quick jobs to finish")
    app.cancel(app.enqueue("emails.send", {"to": "ops@example.com", "template": "weekly"},
                           delay=3600).id)

    paused = app.enqueue(files.name, {"path": "uploads/customers-eu.csv", "steps": 200})
    wait_until(lambda: app.get(paused.id).state is JobState.RUNNING, message="running")
    files.step(84)
    wait_until(lambda: app.get(paused.id).progress.current_step == 84, message="progress")
    app.pause(paused.id, reason="maintenance window")
    wait_until(lambda: app.get(paused.id).state is JobState.PAUSED, message="paused")

    moving = app.enqueue(files.name, {"path": "uploads/customers-us.csv", "steps": 200})
    wait_until(lambda: app.get(moving.id).state is JobState.RUNNING, message="running")
    files.step(131)
    wait_until(lambda: app.get(moving.id).progress.current_step == 131, message="progress")
    app.enqueue("reports.generate", {"month": "2026-10"}, delay=3600)


@contextlib.contextmanager
def demo_site(folder: Path) -> Iterator[tuple[str, Conveyor, Stepper]]:
    """A served, populated demo app: (base URL, app, the hand-stepped job type)."""
    app = Conveyor(f"sqlite:///{folder / 'demo.db'}")
    files = register_demo_types(app)
    try:
        with serving(app, poll_interval=0.2) as server, running_worker(app):
            populate(app, files)
            yield server.url, app, files
            files.step(10_000)  # let the running import finish, so the worker stops at once
    finally:
        app.close()


def take_screenshot(target: Path) -> None:
    with tempfile.TemporaryDirectory() as folder, demo_site(Path(folder)) as (url, _, _), \
            chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 640},
                                      device_scale_factor=1)
        page = context.new_page()
        page.goto(f"{url}/login?token={TOKEN}")
        page.wait_for_selector('#live[data-state="on"]')
        page.wait_for_timeout(600)  # let the progress bars' transition settle
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
        page.goto("about:blank")
        context.close()


if __name__ == "__main__":
    take_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/dashboard.png"))
