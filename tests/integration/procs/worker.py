"""One worker process of the crash and race tests.

    python -m tests.integration.procs.worker --url URL --name a [--burst] [timings]

It runs a worker over the test app (``tests.integration.procs.jobs``) until SIGTERM/SIGINT
(graceful shutdown: the worker's own signal handlers) or, with ``--burst``, until no work is
left; it logs to stderr and exits 0. Its worker id is ``<name>:<pid>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tests.integration.procs.jobs import build_app

log = logging.getLogger("procs.worker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--heartbeat", type=float, default=0.3)
    parser.add_argument("--reap", type=float, default=0.3)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--progress", type=float, default=0.05)
    parser.add_argument("--shutdown-grace", type=float, default=5.0)
    parser.add_argument("--cancel-grace", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(args.url)
    worker = app.worker(
        concurrency=args.concurrency, lease_seconds=args.lease,
        heartbeat_interval=args.heartbeat, reap_interval=args.reap,
        poll_interval=args.poll, progress_interval=args.progress,
        shutdown_grace=args.shutdown_grace, cancel_grace=args.cancel_grace,
        worker_id=f"{args.name}:{os.getpid()}")
    log.info("worker %s ready", worker.worker_id)
    try:
        stats = worker.run(burst=args.burst)
    finally:
        app.close()
    log.info("worker %s exits: %s", worker.worker_id, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
