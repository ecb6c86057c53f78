"""One worker process of the limits race test, on SQLite or PostgreSQL.

    python -m tests.integration.procs.limited --url URL --name a --log FILE [timings]

A burst worker over two limited job types; each job appends one line to FILE when it ends:
``<job type> <limit key> <start> <end>``, times from the machine's monotonic clock (shared by
every process), so the test can count how many ran at once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from conveyor import Conveyor
from conveyor.context import JobContext
from tests.integration.subprocs import append_line, log_to_stderr, run_worker, worker_parser

log = logging.getLogger("procs.limited")
#: How long each job runs: long enough that jobs claimed together overlap.
RUN_SECONDS = 0.02


def build_app(url: str, record: str) -> Conveyor:
    app = Conveyor(url)
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def run(job_type: str, key: str) -> None:
        start = time.monotonic()
        time.sleep(RUN_SECONDS)
        append_line(fd, job_type, key, start, time.monotonic())

    @app.job("lim.two", max_running=2)
    def two(ctx: JobContext, n: int = 0) -> None:
        run("lim.two", "-")

    @app.job("lim.tenant", max_running=1, limit_key="tenant:{tenant_id}")
    def tenant(ctx: JobContext, tenant_id: int, n: int = 0) -> None:
        run("lim.tenant", f"tenant:{tenant_id}")

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = worker_parser(__doc__, concurrency=4, lease=30.0, heartbeat=1.0, reap=1.0,
                           poll=0.005)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    log_to_stderr()
    run_worker(build_app(args.url, args.log), args, log, burst=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
