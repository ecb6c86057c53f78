"""Bodies of the processes that race ``claim`` and ``start`` on one SQLite file.

They run in ``multiprocessing`` processes started with the ``spawn`` method, so each has its
own interpreter and its own connection to the file, and meet the other racers at a shared
``multiprocessing.Barrier`` before every claim, so the calls leave at the same moment. Each
writes what it got to its own file, one line per outcome, read by the test afterwards.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

from conveyor.changes import ChangeRefused
from conveyor.errors import InvalidStateError
from conveyor.lifecycle import JobState
from conveyor.stores.sqlite.store import SQLiteStore
from conveyor.transitions import start

LEASE = 300.0
BARRIER_TIMEOUT = 60.0


def pair_rounds(url: str, barrier: Any, name: str, claim_types: list[str],
                start_ids: list[str], out: str) -> None:
    """Round by round, race the other process: ``claim`` of a type that has one pending job,
    then a direct ``start`` of one given job. Lines: ``claim <round> <job id or ->`` and
    ``start <round> ok|refused``."""
    store = SQLiteStore(url)
    lines: list[str] = []
    try:
        for index, job_type in enumerate(claim_types):
            barrier.wait(BARRIER_TIMEOUT)
            got = store.claim(name, queues=[], job_types=[job_type], limit=1,
                              lease_seconds=LEASE)
            lines.append(f"claim {index} {got[0].id if got else '-'}")
        for index, job_id in enumerate(start_ids):
            change = start(job_id, JobState.PENDING, name, uuid.uuid4().hex, LEASE)
            barrier.wait(BARRIER_TIMEOUT)
            try:
                store.apply([change])
                lines.append(f"start {index} ok")
            except (ChangeRefused, InvalidStateError):
                lines.append(f"start {index} refused")
    finally:
        Path(out).write_text("".join(f"{line}\n" for line in lines))
        store.close()


def drain(url: str, barrier: Any, name: str, job_type: str, out: str) -> None:
    """Claim batches of 1 to 5 jobs of ``job_type`` until none is left; one id per line.

    Between claims it pauses for up to 2 ms, as a worker runs what it claimed: SQLite's busy
    handler lets a waiting process sleep for milliseconds at a time, so a claimer that went
    straight on could take every job before the others woke, and nothing would have raced.
    """
    store = SQLiteStore(url)
    rng = random.Random(name)
    claimed: list[str] = []
    try:
        barrier.wait(BARRIER_TIMEOUT)
        while True:
            got = store.claim(name, queues=[], job_types=[job_type], limit=rng.randint(1, 5),
                              lease_seconds=LEASE)
            if not got:
                break
            claimed.extend(job.id for job in got)
            time.sleep(rng.uniform(0, 0.002))
    finally:
        Path(out).write_text("".join(f"{job_id}\n" for job_id in claimed))
        store.close()
