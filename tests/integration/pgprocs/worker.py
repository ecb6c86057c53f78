"""One worker process of the chaos tests, "as if on its own host".

    python -m tests.integration.pgprocs.worker --url URL --schema NAME --name w1 [options]

It runs a :class:`conveyor.worker.Worker` over the chaos app until SIGTERM/SIGINT, logging to
stderr (one line per record, so the tests can count error lines). Its connections carry
``application_name=chaos-<name>``, so the tests can find them in ``pg_stat_activity``. Its
worker id is ``<name>:<pid>``: a restarted process is a new worker.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.integration.pgprocs.jobs import build_app
from tests.integration.subprocs import log_to_stderr, run_worker, worker_parser

log = logging.getLogger("chaos.worker")


def with_application_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name=chaos-{name}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = worker_parser(__doc__, concurrency=4, lease=2.0, heartbeat=0.4, reap=0.4,
                           poll=0.5)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--completions", type=Path)
    parser.add_argument("--min-size", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=10)
    parser.add_argument("--pool-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    log_to_stderr()
    app = build_app(with_application_name(args.url, args.name), completions=args.completions,
                    schema=args.schema, min_size=args.min_size, max_size=args.max_size,
                    timeout=args.pool_timeout)
    run_worker(app, args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
