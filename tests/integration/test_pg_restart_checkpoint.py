"""A PostgreSQL restart in the middle of a job that checkpoints in a loop.

The outage (a crash restart, or 5 s down) is far shorter than the lease, so the job must not
notice it: its checkpoints wait and try again, and it completes on its first attempt with
every checkpoint in order. (Before, the first checkpoint during the restart raised StoreError
into the job's code and the job failed, spending an attempt.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from conveyor import Conveyor, Job, JobContext, JobState, StoreError
from tests.conftest import pg_test_url
from tests.integration.pgprocs.harness import PrivateServer, private_server, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
STEPS = 150


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    pg_test_url()
    with private_server() as started:
        yield started


@pytest.mark.parametrize("outage", ["restart-immediate", "down-5s"])
def test_an_outage_shorter_than_the_lease_does_not_fail_a_checkpointing_job(
        server: PrivateServer, outage: str) -> None:
    # A pool timeout far below the outage: each write gives up on a connection quickly, so
    # only trying again (within the lease) carries the job through.
    app = Conveyor(server.url, timeout=1.0)
    seen: list[int] = []
    runs: list[int] = []

    @app.job("looping", max_attempts=3)
    def looping(ctx: JobContext) -> int:
        runs.append(ctx.job.attempt)
        for i in range(int(ctx.checkpoint_data.get("i", 0)), STEPS):
            seen.append(i)
            ctx.checkpoint({"i": i + 1, "last": i})
            threading.Event().wait(0.02)
        return len(seen)

    job = app.enqueue("looping")
    worker = app.worker(concurrency=1, lease_seconds=20.0, heartbeat_interval=1.0,
                        poll_interval=0.2, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(seen) >= 20, 30, "the job's first checkpoints")
        if outage == "down-5s":
            server.stop_for(5.0)
        else:
            server.restart("immediate")
        restarted_at = len(seen)
        assert restarted_at < STEPS, "the job ended before the restart: make it longer"
        # the app's own reads may fail while its pool reconnects (pool timeout 1 s)
        wait_until(lambda: _finished(app, job.id) is not None, 60, "the job to finish")
        done = app.get(job.id)
    finally:
        worker.stop()
        thread.join(30)
        app.close()
    assert done.state is JobState.COMPLETED, done.error
    assert done.attempt == 0 and runs == [0]
    assert seen == list(range(STEPS)), "a checkpoint was skipped or repeated"
    assert done.progress.last_checkpoint == {"i": STEPS, "last": STEPS - 1}
    assert done.result == STEPS
    reopened = Conveyor(server.url)
    try:
        actions = [h.action for h in reopened.history(job.id)]
    finally:
        reopened.close()
    assert actions == ["create", "start", "complete"], actions


def test_a_job_that_returns_while_the_store_is_down_completes_on_its_first_attempt(
        server: PrivateServer) -> None:
    """The final progress write and the outcome wait out the outage too (within the lease)."""
    app = Conveyor(server.url, timeout=1.0)
    release = threading.Event()
    runs: list[int] = []

    @app.job("waiting", max_attempts=3)
    def waiting(ctx: JobContext) -> str:
        runs.append(ctx.job.attempt)
        ctx.progress(1, 2)
        release.wait(60)
        ctx.progress(2, 2)
        return "done"

    job = app.enqueue("waiting")
    worker = app.worker(concurrency=1, lease_seconds=20.0, heartbeat_interval=1.0,
                        poll_interval=0.2, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    outage = threading.Thread(target=server.stop_for, args=(5.0,), daemon=True)
    try:
        wait_until(lambda: bool(runs), 30, "the job to start")
        outage.start()
        wait_until(lambda: not _reachable(server.url), 30, "the server to go down")
        release.set()  # the job returns while nothing can be written
        outage.join(90)
        wait_until(lambda: _finished(app, job.id) is not None, 60, "the job to finish")
        done = app.get(job.id)
    finally:
        release.set()
        worker.stop()
        thread.join(30)
        app.close()
    assert done.state is JobState.COMPLETED, done.error
    assert done.attempt == 0 and runs == [0]
    assert done.result == "done"
    assert (done.progress.current_step, done.progress.total_steps) == (2, 2)


def _finished(app: Conveyor, job_id: str) -> Job | None:
    """The job once terminal; None while running or while the app's pool reconnects."""
    try:
        job = app.get(job_id)
    except StoreError:
        return None
    return job if job.is_terminal else None


def _reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False
