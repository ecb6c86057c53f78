"""An app with one periodic schedule, for ``conveyor schedules --app``."""

from __future__ import annotations

from conveyor import Conveyor, JobContext

app = Conveyor()


@app.periodic("0 3 * * *", timezone="Europe/Paris", name="nightly")
@app.job("reports.nightly")
def nightly(ctx: JobContext) -> None:
    return None
