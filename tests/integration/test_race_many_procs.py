"""Many processes on one SQLite file: three worker processes and the test process, at once.

The test process enqueues 300 short checkpointing jobs while pausing, resuming and cancelling
them at random as they run. At the end every job is terminal, none is lost, none completed
twice, every run the jobs recorded matches a start in their history, and no process met a
"database is locked" error.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from conveyor import EnqueueRequest, InvalidStateError, Job, JobState
from tests.integration.procs.harness import Procs, wait_until
from tests.integration.procs.jobs import STEPS

pytestmark = pytest.mark.slow
JOBS = 300
#: No worker dies here, so a long lease: a run is never reaped however loaded the machine.
TIMINGS: dict[str, Any] = {
    "lease": 10.0, "heartbeat": 0.3, "reap": 0.3, "poll": 0.05, "progress": 0.05,
}


def test_three_workers_and_an_operator_on_one_file_lose_nothing(procs: Procs) -> None:
    rng = random.Random(7)
    app = procs.app
    workers = [procs.worker(f"w{i}", concurrency=c, **TIMINGS) for i, c in enumerate((2, 3, 4))]
    ids: list[str] = []
    ops: Counter[str] = Counter()

    def control(job: Job) -> None:
        """One random operator move that fits the job's state (it may have moved since)."""
        try:
            if job.state is JobState.RUNNING and rng.random() < 0.5:
                app.pause(job.id, actor="operator")
                ops["pause"] += 1
            elif job.state is JobState.PAUSED and not job.resume_requested:
                app.resume(job.id, actor="operator")
                ops["resume"] += 1
            elif not job.is_terminal and rng.random() < 0.15:
                app.cancel(job.id, actor="operator")
                ops["cancel"] += 1
        except InvalidStateError:
            ops["refused"] += 1

    # Until the jobs are in and the operator has paused at least one running job (on a loaded
    # machine the workers may start only after most jobs were enqueued).
    deadline = time.monotonic() + 60
    while len(ids) < JOBS or (not ops["pause"] and time.monotonic() < deadline):
        batch = [EnqueueRequest(STEPS, {"steps": rng.randint(3, 8),
                                        "step_s": rng.uniform(0.005, 0.03)})
                 for _ in range(rng.randint(1, 10))]
        if rng.random() < 0.5:
            ids += [job.id for job in app.enqueue_many(batch, actor="operator")]
        else:
            ids += [app.enqueue(r.job_type, r.params, actor="operator").id for r in batch]
        running_now = app.list(state=JobState.RUNNING, limit=20)
        for job in [*app.store.get_jobs(rng.sample(ids, min(len(ids), 8))),
                    *rng.sample(running_now, min(len(running_now), 3))]:
            control(job)
        time.sleep(0.01)

    def settled() -> bool:
        """All terminal; meanwhile keep resuming what the operator paused."""
        jobs = app.store.get_jobs(ids)
        for job in jobs:
            if job.state is JobState.PAUSED and not job.resume_requested:
                app.resume(job.id, actor="operator")
                ops["resume"] += 1
        return all(job.is_terminal for job in jobs)

    wait_until(settled, 60, "every job to end", interval=0.05, report=procs.report)
    for proc in workers:
        code, _ = proc.terminate(15)
        assert code == 0, procs.report()

    assert len(ids) == len(set(ids)) >= JOBS
    final = app.store.get_jobs(ids)
    assert len(final) == len(ids), "no job lost"
    assert sum(app.counts().values()) == len(ids)
    states = Counter(job.state.value for job in final)
    print(f"states {dict(states)}, operator moves {dict(ops)}")
    assert set(states) <= {"completed", "cancelled"}, states
    assert ops["pause"] > 0, ops
    assert ops["cancel"] > 0, ops

    starts = Counter(e.job_id for e in procs.events(kind="start"))
    dones = Counter(e.job_id for e in procs.events(kind="done"))
    for job in final:
        history = app.history(job.id)
        actions = [h.action for h in history]
        where = f"job {job.id}: {[(h.action, h.to_state.value, h.actor) for h in history]}"
        assert "fail" not in actions, where
        assert actions.count("start") <= 1, where
        assert starts[job.id] == actions.count("start") + actions.count("resume"), (
            f"{starts[job.id]} runs recorded: {where}")
        if job.state is JobState.COMPLETED:
            assert actions.count("start") == actions.count("complete") == 1, where
            assert actions[-1] == "complete", where
            assert dones[job.id] == 1, f"completed {dones[job.id]} times: {where}"
        else:
            assert actions[-1] == "cancel", where
            assert dones[job.id] == 0, where
    for proc in workers:
        assert "database is locked" not in proc.err()
        assert not proc.problems(), procs.report()
