"""The reaper racing completions, across processes on one SQLite file: never a resurrection.

Worker processes run jobs whose duration straddles their lease (heartbeats come just as the
lease runs out), while another process does nothing but run the reaper as fast as it can. So a
job's lease often expires at the very moment its worker records the result, and either the
completion or the "worker lost" failure wins the compare-and-set, never both. At the end every
job is completed, or failed with its attempts used up; its history is one unbroken chain of
legal moves; and nothing follows a ``complete``.
"""

from __future__ import annotations

import itertools
import random
import signal
from collections import Counter
from typing import Any

import pytest

from conveyor import EnqueueRequest, JobState
from conveyor.lifecycle import find_transition
from tests.integration.procs.harness import Procs, wait_until
from tests.integration.procs.jobs import QUICK

pytestmark = pytest.mark.slow
JOBS = 150
#: Heartbeats come just as the lease runs out, so leases expire for a few ms in each period.
LEASE: dict[str, Any] = {
    "lease": 0.4, "heartbeat": 0.39, "reap": 0.05, "progress": 0.05, "poll": 0.02,
}


def test_reaper_racing_completions_never_resurrects_a_job(procs: Procs) -> None:
    rng = random.Random(4)
    workers = [procs.worker(f"w{i}", concurrency=4, **LEASE) for i in range(2)]
    hammer = procs.spawn("hammer", "tests.integration.procs.reaper")
    jobs = procs.app.enqueue_many(
        EnqueueRequest(QUICK, {"seconds": rng.uniform(0.25, 0.55)}) for _ in range(JOBS))
    ids = [job.id for job in jobs]

    def all_terminal() -> bool:
        return all(job.is_terminal for job in procs.app.store.get_jobs(ids))

    wait_until(all_terminal, 80, "every job to end", interval=0.1, report=procs.report)
    hammer.send(signal.SIGTERM)
    assert hammer.wait_exit(15) == 0, procs.report()
    passes, reaped = map(int, hammer.out().split())
    for proc in workers:
        code, _ = proc.terminate(15)
        assert code == 0, procs.report()

    final = {job.id: job for job in procs.app.store.get_jobs(ids)}
    outcomes: Counter[str] = Counter()
    fails = 0
    for job_id in ids:
        job = final[job_id]
        history = procs.history(job_id)
        where = f"job {job_id}: {[(h.action, h.to_state.value, h.actor) for h in history]}"
        assert (history[0].action, history[0].to_state) == ("create", JobState.PENDING), where
        for before, entry in itertools.pairwise(history):
            assert entry.from_state is before.to_state, f"broken chain: {where}"
            if entry.to_state is not entry.from_state:
                assert entry.from_state is not None
                assert find_transition(entry.from_state, entry.to_state) is not None, where
        assert history[-1].to_state is job.state, where
        actions = [h.action for h in history]
        assert actions.count("start") == job.attempt + 1, where
        for entry in history:
            if entry.action == "fail":
                fails += 1
                assert entry.reason == "worker lost", where
                assert entry.actor in {"hammer"} or entry.actor.startswith("reaper@"), where
        if job.state is JobState.COMPLETED:
            assert actions.count("complete") == 1, where
            assert actions[-1] == "complete", f"something after complete: {where}"
            assert job.result["attempt"] == job.attempt, where
            assert history[-1].actor == job.result["worker"], where
            ran = [(e.attempt, e.pid) for e in procs.events(job_id, "done")]
            assert (job.attempt, job.result["pid"]) in ran, where
        else:
            assert job.state is JobState.FAILED, where
            assert job.attempt == job.max_attempts, where
            assert "complete" not in actions, where
        outcomes[job.state.value] += 1

    dropped = sum(p.err().count("outcome completed dropped") for p in workers)
    print(f"outcomes {dict(outcomes)}, worker-lost fails {fails} (hammer {reaped} in "
          f"{passes} passes), finished runs dropped {dropped}")
    assert outcomes["completed"] > 0
    assert fails > 0, "no lease ever expired: the race was not exercised"
    for proc in [*workers, hammer]:
        assert not proc.problems(), procs.report()
