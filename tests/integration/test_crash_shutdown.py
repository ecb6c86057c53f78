"""SIGTERM to a worker process on the SQLite store: graceful shutdown, nothing lost.

A job that checkpoints within ``shutdown_grace`` is paused with ``resume_requested`` (no
attempt spent) and another worker process resumes it from its checkpoint. A job that does not
is released as a lost worker's job would be: failed "worker lost (shutdown)", then retried.
Either way the process exits 0 and leaves nothing running.
"""

from __future__ import annotations

import pytest

from conveyor import JobState
from tests.integration.procs.harness import Procs, steps_of
from tests.integration.procs.jobs import STEPS

pytestmark = pytest.mark.slow


def test_sigterm_pauses_a_checkpointing_job_and_another_worker_resumes_it(
        procs: Procs) -> None:
    grace = 30.0
    job = procs.app.enqueue(STEPS, {"steps": 30, "step_s": 0.1})
    a = procs.worker("a", shutdown_grace=grace)
    procs.wait_job(job.id, lambda j: j.progress.last_checkpoint.get("i", 0) >= 5, 30,
                   "the job to checkpoint step 5 on worker a")
    code, took = a.terminate(grace + 10)
    assert code == 0, procs.report()
    assert took < 10, f"worker a took {took:.1f}s to exit (grace {grace}s)"

    paused = procs.job(job.id)
    assert paused.state is JobState.PAUSED
    assert paused.resume_requested
    assert paused.attempt == 0, "no attempt spent"
    assert paused.worker_id is None
    assert paused.lease_token is None
    saved = paused.progress.last_checkpoint["i"]
    assert 5 <= saved < 30
    assert paused.progress.current_step == saved
    assert procs.app.list(state=JobState.RUNNING) == []

    b = procs.worker("b", burst=True)
    assert b.wait_exit(30) == 0, procs.report()
    done = procs.job(job.id)
    assert done.state is JobState.COMPLETED
    assert done.attempt == 0
    assert done.result == {"pid": b.pid, "worker": b.worker_id, "attempt": 0, "start": saved}
    starts = [(e.attempt, e.pid, e.value) for e in procs.events(job.id, "start")]
    assert starts == [(0, a.pid, 0), (0, b.pid, saved)], "resumed from the checkpoint"
    assert [e.pid for e in procs.events(job.id, "done")] == [b.pid], "completed exactly once"
    history = procs.history(job.id)
    assert steps_of(history) == [
        ("create", "pending"), ("start", "running"), ("pause", "paused"),
        ("resume", "running"), ("complete", "completed"),
    ]
    assert history[2].actor == a.worker_id
    assert history[2].reason == "worker shutdown"
    assert history[3].actor == b.worker_id
    for proc in (a, b):
        assert not proc.problems(), procs.report()


def test_sigterm_releases_a_job_that_does_not_checkpoint_within_the_grace(
        procs: Procs) -> None:
    grace = 1.0
    job = procs.app.enqueue(STEPS, {"steps": 400, "step_s": 0.05, "checkpoint": False})
    a = procs.worker("a", shutdown_grace=grace)
    procs.wait_job(job.id, lambda j: j.progress.current_step >= 3, 30,
                   "the job to make progress on worker a")
    code, took = a.terminate(grace + 20)
    assert code == 0, procs.report()
    released = procs.job(job.id)
    assert released.state is JobState.PENDING, "released: failed, then retried"
    assert released.attempt == 1
    assert released.worker_id is None
    assert released.lease_token is None
    assert procs.app.list(state=JobState.RUNNING) == [], "nothing left running"
    history = procs.history(job.id)
    assert steps_of(history) == [
        ("create", "pending"), ("start", "running"), ("fail", "failed"), ("retry", "pending"),
    ]
    assert history[2].reason == "worker lost (shutdown)"
    assert history[2].actor == a.worker_id
    assert procs.events(job.id, "done") == []
    assert not a.problems(), procs.report()
    assert took < grace + 10, (  # not the job's 20 s to finish on its own
        f"worker a took {took:.1f}s to exit after SIGTERM with a {grace}s grace\n"
        f"{procs.report()}")
