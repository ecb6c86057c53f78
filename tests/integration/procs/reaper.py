"""A process that does nothing but run the reaper, as fast as it can, until SIGTERM.

    python -m tests.integration.procs.reaper --url URL

It races every worker's completion with a "worker lost" failure the moment a lease expires.
On exit it prints how many passes it made and how many jobs it failed, as ``passes reaped``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from conveyor.worker.reaper import reap
from tests.integration.procs.jobs import build_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pause", type=float, default=0.002)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    app = build_app(args.url)
    passes = reaped = 0
    try:
        while not stop.is_set():
            reaped += reap(app, actor="hammer").lost
            passes += 1
            time.sleep(args.pause)
    finally:
        app.close()
    print(passes, reaped, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
