"""The example's application: the job types its workers run and its dashboard shows.

Every container imports this module (``CONVEYOR_APP=jobsapp:app``); the store comes from
``CONVEYOR_STORE``, which compose.yaml points at the PostgreSQL service. Importing it opens
nothing: the store is opened on first use.
"""

from __future__ import annotations

import os
import time

from conveyor import Conveyor, JobContext

app = Conveyor(os.environ.get("CONVEYOR_STORE", "sqlite:///conveyor.db"))


@app.job("reports.generate", max_attempts=3, timeout=600)
def generate_report(ctx: JobContext, month: str, pages: int = 20) -> dict[str, object]:
    """A long job that checkpoints every page: pause, cancel or a worker's restart resume it
    from the page it reached."""
    done = int(ctx.checkpoint_data.get("pages", 0))
    for page in range(done, pages):
        time.sleep(0.5)  # the real work of one page
        ctx.progress(page + 1, pages)
        ctx.checkpoint({"pages": page + 1})
    return {"month": month, "pages": pages}


@app.job("emails.send", queue="emails")
def send_email(ctx: JobContext, to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"
