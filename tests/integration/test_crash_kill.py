"""Workers killed outright (SIGKILL) on the SQLite store: the job is never lost.

A worker process dies mid-job holding its lease; another worker process's reaper fails the job
"worker lost" once the lease has expired, retries it, and the job resumes from its last
checkpoint. A job that kills every worker that runs it ends failed after its attempts, and
does not make workers crash-loop.
"""

from __future__ import annotations

import signal
import time

import pytest

from conveyor import JobState
from tests.integration.procs.harness import Procs, steps_of, wait_until
from tests.integration.procs.jobs import QUICK, STEPS, SUICIDE

pytestmark = pytest.mark.slow


def test_sigkilled_worker_job_is_retried_from_its_checkpoint(procs: Procs) -> None:
    job = procs.app.enqueue(STEPS, {"steps": 20, "step_s": 0.1})
    a = procs.worker("a")
    procs.wait_job(job.id, lambda j: j.progress.last_checkpoint.get("i", 0) >= 6, 30,
                   "the job to checkpoint step 6 on worker a")
    a.send(signal.SIGKILL)
    assert a.wait_exit(10) == -signal.SIGKILL
    killed = procs.job(job.id)
    saved = killed.progress.last_checkpoint["i"]
    assert killed.state is JobState.RUNNING
    assert killed.worker_id == a.worker_id
    assert 6 <= saved < 20

    b = procs.worker("b")
    done = procs.wait_job(job.id, lambda j: j.is_terminal, 40, "the job to complete on b")

    assert done.state is JobState.COMPLETED, procs.report()
    assert done.attempt == 1
    assert done.result == {"pid": b.pid, "worker": b.worker_id, "attempt": 1, "start": saved}
    starts = [(e.attempt, e.pid, e.value) for e in procs.events(job.id, "start")]
    assert starts == [(0, a.pid, 0), (1, b.pid, saved)], "resumed from the saved checkpoint"
    finished = [(e.attempt, e.pid) for e in procs.events(job.id, "done")]
    assert finished == [(1, b.pid)], "completed exactly once"

    history = procs.history(job.id)
    assert steps_of(history) == [
        ("create", "pending"), ("start", "running"), ("fail", "failed"),
        ("retry", "pending"), ("start", "running"), ("complete", "completed"),
    ]
    fail = history[2]
    assert fail.reason == "worker lost"
    assert fail.actor == f"reaper@{b.worker_id}"
    assert fail.attempt == 0
    assert history[1].actor == a.worker_id
    assert history[4].actor == b.worker_id
    assert history[5].actor == b.worker_id
    code, _ = b.terminate(15)
    assert code == 0, procs.report()
    assert not b.problems(), procs.report()


def test_a_completion_killed_before_its_batch_was_written_is_run_again_and_completed_once(
        procs: Procs) -> None:
    """The job returned, its completion waits in the worker's batch (``batch_wait``), and the
    worker is SIGKILLed before writing it: the store still says running, so after the lease
    another worker runs it again (at least once) and it is completed exactly once."""
    a = procs.worker("a", lease=3.0, heartbeat=0.5, batch_wait=2.5)
    job = procs.app.enqueue(QUICK, {"seconds": 0})
    wait_until(lambda: procs.events(job.id, "done"), 20, "the job to return on worker a",
               report=procs.report)
    a.send(signal.SIGKILL)
    assert a.wait_exit(10) == -signal.SIGKILL
    assert procs.job(job.id).state is JobState.RUNNING, "the completion was never written"

    b = procs.worker("b")
    done = procs.wait_job(job.id, lambda j: j.is_terminal, 40, "the job to complete on b")
    assert done.state is JobState.COMPLETED, procs.report()
    assert done.result == {"pid": b.pid, "worker": b.worker_id, "attempt": 1}
    assert [(e.attempt, e.pid) for e in procs.events(job.id, "done")] == [(0, a.pid),
                                                                        (1, b.pid)]
    assert steps_of(procs.history(job.id)).count(
        ("complete", "completed")) == 1
    code, _ = b.terminate(15)
    assert code == 0, procs.report()


def test_job_that_kills_its_worker_ends_failed_without_a_crash_loop(procs: Procs) -> None:
    job = procs.app.enqueue(SUICIDE)
    assert job.max_attempts == 2
    deaths = []
    current = procs.worker("sup")
    deadline = time.monotonic() + 60
    while not procs.job(job.id).is_terminal:  # the supervisor: restart the worker if it died
        assert time.monotonic() < deadline, f"job not failed in time\n{procs.report()}"
        if not current.alive():
            deaths.append(current.popen.returncode)
            assert len(deaths) <= 10, f"too many worker restarts\n{procs.report()}"
            current = procs.worker("sup")
        time.sleep(0.02)

    failed = procs.job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.attempt == failed.max_attempts == 2
    assert failed.error is not None
    assert failed.error.type == "WorkerLost"
    runs = procs.events(job.id, "run")
    assert [e.attempt for e in runs] == [0, 1, 2], "1 + max_attempts runs"
    assert len({e.pid for e in runs}) == 3, "each run killed a different worker"
    assert deaths == [-signal.SIGKILL] * 3
    assert steps_of(procs.history(job.id)) == [
        ("create", "pending"),
        ("start", "running"), ("fail", "failed"), ("retry", "pending"),
        ("start", "running"), ("fail", "failed"), ("retry", "pending"),
        ("start", "running"), ("fail", "failed"),
    ]
    assert all(h.reason == "worker lost" for h in procs.history(job.id) if h.action == "fail")

    assert current.alive(), "the worker that reaped the last run is still up"
    code, _ = current.terminate(15)
    assert code == 0, procs.report()
    burst = procs.worker("burst", burst=True)
    assert burst.wait_exit(20) == 0, procs.report()
    assert procs.job(job.id).state is JobState.FAILED
    assert len(procs.events(job.id, "run")) == 3, "no run after the attempts were used up"


def test_a_pause_requested_before_the_worker_was_killed_holds_for_the_retry(
        procs: Procs) -> None:
    """Issue 8 item 20, for real: the operator's pause outlives the worker that never saw it."""
    job = procs.app.enqueue(STEPS, {"steps": 40, "step_s": 0.1})
    a = procs.worker("a")
    procs.wait_job(job.id, lambda j: j.progress.last_checkpoint.get("i", 0) >= 3, 30,
                   "the job to checkpoint step 3 on worker a")
    a.send(signal.SIGSTOP)  # frozen: it can no longer honour the request, nor checkpoint
    asked = procs.app.pause(job.id, actor="operator")
    assert asked.state is JobState.RUNNING and asked.pause_requested
    a.send(signal.SIGKILL)
    assert a.wait_exit(10) == -signal.SIGKILL
    saved = procs.job(job.id).progress.last_checkpoint["i"]

    b = procs.worker("b")
    paused = procs.wait_job(job.id, lambda j: j.state is JobState.PAUSED, 40,
                            "the retried run to pause at its first checkpoint")
    assert paused.attempt == 1
    assert paused.progress.last_checkpoint["i"] == saved + 1, "paused at the first checkpoint"
    assert steps_of(procs.history(job.id))[-5:] == [
        ("request_pause", "running"), ("fail", "failed"), ("retry", "pending"),
        ("start", "running"), ("pause", "paused")], "one request, honoured by the retried run"

    procs.app.resume(job.id)
    done = procs.wait_job(job.id, lambda j: j.is_terminal, 40, "the job to complete on b")
    assert done.state is JobState.COMPLETED, procs.report()
    assert done.result["start"] == saved + 1
    code, _ = b.terminate(15)
    assert code == 0, procs.report()
