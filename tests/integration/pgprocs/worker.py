"""One worker process of the chaos tests, "as if on its own host".

    python -m tests.integration.pgprocs.worker --url URL --schema NAME --name w1 [options]

It runs a :class:`conveyor.worker.Worker` over the chaos app until SIGTERM/SIGINT, logging to
stderr (one line per record, so the tests can count error lines). Its connections carry
``application_name=chaos-<name>``, so the tests can find them in ``pg_stat_activity``. Its
worker id is ``<name>:<pid>``: a restarted process is a new worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.integration.pgprocs.jobs import build_app

log = logging.getLogger("chaos.worker")


def with_application_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name=chaos-{name}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--completions", type=Path)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.4)
    parser.add_argument("--reap", type=float, default=0.4)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--progress", type=float, default=0.05)
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--cancel-grace", type=float, default=2.0)
    parser.add_argument("--min-size", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=10)
    parser.add_argument("--pool-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(with_application_name(args.url, args.name), completions=args.completions,
                    schema=args.schema, min_size=args.min_size, max_size=args.max_size,
                    timeout=args.pool_timeout)
    worker = app.worker(
        concurrency=args.concurrency, lease_seconds=args.lease,
        heartbeat_interval=args.heartbeat, reap_interval=args.reap,
        poll_interval=args.poll, progress_interval=args.progress,
        shutdown_grace=args.shutdown_grace, cancel_grace=args.cancel_grace,
        worker_id=f"{args.name}:{os.getpid()}")
    try:
        stats = worker.run()
    finally:
        app.close()
    log.info("chaos worker %s exits: %s", args.name, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
