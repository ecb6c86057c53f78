"""A zombie worker on the SQLite store: stopped (SIGSTOP) past its lease, then continued.

While it is stopped, another worker's reaper fails its job "worker lost", retries it, and the
other worker runs it to the end. When the zombie comes back, every write it attempts to that
job is refused by the lease fence: the job's result, progress, checkpoint and history are the
other worker's alone, and the zombie carries on running (it can still be stopped normally).
"""

from __future__ import annotations

import signal

import pytest

from conveyor import JobState
from conveyor.worker.reaper import reap
from tests.integration.procs.harness import Procs, steps_of, wait_until
from tests.integration.procs.jobs import STEPS

pytestmark = pytest.mark.slow


def test_zombie_worker_is_fenced_out_after_its_job_was_taken_over(procs: Procs) -> None:
    job = procs.app.enqueue(STEPS, {"steps": 40, "step_s": 0.05, "trace": True})
    a = procs.worker("a")
    procs.wait_job(job.id, lambda j: j.progress.last_checkpoint.get("i", 0) >= 3, 30,
                   "the job to checkpoint step 3 on worker a")
    procs.freeze(a)
    frozen = procs.job(job.id)
    assert frozen.state is JobState.RUNNING
    assert frozen.worker_id == a.worker_id
    saved_by_a = frozen.progress.last_checkpoint["i"]

    b = procs.worker("b")
    done = procs.wait_job(job.id, lambda j: j.is_terminal, 40,
                          "the job to be taken over and completed by b")
    assert done.state is JobState.COMPLETED, procs.report()
    history_at_b = procs.history(job.id)

    a.send(signal.SIGCONT)
    # the zombie wakes up, heartbeats and tries to checkpoint its next step: refused
    wait_until(lambda: "outcome lost dropped" in a.err(), 20,
               "worker a to find its lease lost and drop its run", report=procs.report)
    a_steps = [e.value for e in procs.events(job.id, "step") if e.pid == a.pid]
    assert max(a_steps) > saved_by_a, "a computed a step it was never able to save"

    final = procs.job(job.id)
    assert final.state is JobState.COMPLETED
    assert final.result == {"pid": b.pid, "worker": b.worker_id, "attempt": 1,
                            "start": saved_by_a}
    assert final.progress.current_step == 40
    assert final.progress.last_checkpoint == {"i": 40, "pid": b.pid}
    assert final.updated_at == done.updated_at, "nothing was written to the job after b"
    history = procs.history(job.id)
    assert history == history_at_b, "a left no history entry"
    assert steps_of(history) == [
        ("create", "pending"), ("start", "running"), ("fail", "failed"),
        ("retry", "pending"), ("start", "running"), ("complete", "completed"),
    ]
    b_claim = history[4]
    assert b_claim.actor == b.worker_id
    assert all(a.worker_id not in h.actor for h in history[2:]), history
    assert history[2].reason == "worker lost"
    assert [e.pid for e in procs.events(job.id, "done")] == [b.pid], "only b finished the job"

    assert a.alive(), f"the zombie crashed\n{procs.report()}"
    assert not a.problems(), procs.report()
    for proc in (a, b):
        code, _ = proc.terminate(15)
        assert code == 0, procs.report()


def test_zombie_that_claims_its_own_job_again_keeps_the_new_run(procs: Procs) -> None:
    """The zombie, once continued, claims the retried job itself while its old run (which does
    not checkpoint, so it cannot notice the lost lease) is still going. The old run ending must
    not take the new run's slot with it: the new run keeps its lease and completes."""
    job = procs.app.enqueue(STEPS, {"steps": 60, "step_s": 0.05, "checkpoint": False})
    a = procs.worker("a", concurrency=2)
    procs.wait_job(job.id, lambda j: j.progress.current_step >= 40, 30,
                   "the job to reach step 40 on worker a")
    procs.freeze(a)
    store = procs.app.store
    procs.wait_job(job.id, lambda j: j.lease_expires_at is not None
                   and j.lease_expires_at < store.now(), 20, "a's lease to expire")
    wait_until(lambda: reap(procs.app).lost == 1, 10, "the test's reaper to fail the job")
    assert procs.job(job.id).attempt == 1

    a.send(signal.SIGCONT)
    done = procs.wait_job(job.id, lambda j: j.is_terminal, 40, "the job to end")

    history = procs.history(job.id)
    fails = [h for h in history if h.action == "fail"]
    assert [(f.attempt, f.actor) for f in fails] == [(0, "reaper")], (
        f"a was alive after SIGCONT yet lost its new run: {steps_of(history)}\n"
        f"{[(h.action, h.attempt, h.actor, h.reason) for h in history]}\n{procs.report()}")
    assert done.state is JobState.COMPLETED
    assert done.attempt == 1
    assert done.result == {"pid": a.pid, "worker": a.worker_id, "attempt": 1, "start": 0}
    code, _ = a.terminate(15)
    assert code == 0, procs.report()
