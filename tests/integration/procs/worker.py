"""One worker process of the crash and race tests.

    python -m tests.integration.procs.worker --url URL --name a [--burst] [timings]

It runs a worker over the test app (``tests.integration.procs.jobs``) until SIGTERM/SIGINT
(graceful shutdown: the worker's own signal handlers) or, with ``--burst``, until no work is
left; it logs to stderr and exits 0. Its worker id is ``<name>:<pid>``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from tests.integration.procs.jobs import build_app
from tests.integration.subprocs import log_to_stderr, run_worker, worker_parser

log = logging.getLogger("procs.worker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = worker_parser(__doc__, concurrency=1, lease=1.5, heartbeat=0.3, reap=0.3,
                           poll=0.05)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args(argv)
    log_to_stderr()
    run_worker(build_app(args.url), args, log, burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
