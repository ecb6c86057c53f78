"""Several worker processes on one PostgreSQL database, with the operator and the OS meddling.

Four worker processes ("as if on four hosts") share 2,000 short jobs. Meanwhile the test
pauses and resumes running jobs, cancels pending and running ones, enqueues more, lets some
jobs fail once and be retried, and SIGKILLs two workers mid-run (each while it holds jobs),
restarting them. At the end every job is terminal, none is lost, none is left running, and
the completions file (one line per run that reached the end, written by the job itself) shows
that no job ran to completion twice -- except where the run that completed first belonged to
a worker that was killed before it could record it, which the job's history must then show
as a lost worker.

Timings are short (lease 2 s, heartbeat and reaper 0.4 s) so that the killed workers' jobs
come back within seconds. The server is the shared one of ``make test``
(``CONVEYOR_TEST_PG_URL``); without it this test fails, it is never skipped.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, ConveyorError, EnqueueRequest, JobState
from tests.conftest import pg_test_url
from tests.integration.pgprocs.harness import Fleet, admin, drop_schema, listeners, wait_until
from tests.integration.pgprocs.jobs import WORK, build_app, read_completions

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORKERS = ["w0", "w1", "w2", "w3"]
FIRST_BATCH = 1000
LATER_BATCHES = 4
BATCH = 250
TOTAL = FIRST_BATCH + LATER_BATCHES * BATCH
TIMINGS = {"concurrency": 4, "lease": 2.0, "heartbeat": 0.4, "reap": 0.4, "poll": 0.5,
           "progress": 0.05, "shutdown_grace": 5.0}


@pytest.fixture
def pg_url() -> str:
    return pg_test_url()


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"chaos_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(pg_url, name)


@pytest.fixture
def fleet(pg_url: str, schema: str, tmp_path: Path) -> Iterator[Fleet]:
    workers = Fleet(pg_url, schema, tmp_path,
                    {**TIMINGS, "completions": tmp_path / "completions.log"})
    try:
        yield workers
    finally:
        workers.close()


def _batch(rng: random.Random, count: int) -> list[EnqueueRequest]:
    """Mostly short jobs (3 steps of 2 ms), some long (20 of 15 ms), 1 in 16 failing once."""
    requests = []
    for _ in range(count):
        long = rng.random() < 0.1
        params: dict[str, object] = ({"steps": 20, "step_ms": 15.0} if long
                                     else {"steps": 3, "step_ms": 2.0})
        if rng.random() < 1 / 16:
            params["fail_once"] = True
        requests.append(EnqueueRequest(WORK, params))
    return requests


class Operator:
    """The test's meddling: pauses, resumes and cancels, tolerating every lost race."""

    def __init__(self, app: Conveyor, rng: random.Random) -> None:
        self.app = app
        self.rng = rng
        self.cancel_asked: set[str] = set()
        self.paused: set[str] = set()
        self.pauses = 0

    def _try(self, action: str, job_id: str) -> bool:
        try:
            getattr(self.app, action)(job_id, actor="chaos-test")
        except ConveyorError:  # it finished or moved first: a lost race, as in real life
            return False
        return True

    def meddle(self) -> None:
        running = self.app.list(state=JobState.RUNNING, limit=100)
        long_ones = [j for j in running if j.params["steps"] > 3 and not j.cancel_requested]
        for job in self.rng.sample(long_ones, min(2, len(long_ones))):
            if self.pauses < 120 and self._try("pause", job.id):
                self.pauses += 1
                self.paused.add(job.id)
        if running and self.rng.random() < 0.3 and len(self.cancel_asked) < 40:
            job = self.rng.choice(running)
            if self._try("cancel", job.id):
                self.cancel_asked.add(job.id)
        if self.rng.random() < 0.2 and len(self.cancel_asked) < 60:
            pending = self.app.list(state=JobState.PENDING, limit=50)
            if pending:
                job = self.rng.choice(pending)
                if self._try("cancel", job.id):
                    self.cancel_asked.add(job.id)

    def resume_paused(self) -> None:
        for job in self.app.list(state=JobState.PAUSED, limit=200):
            if not job.resume_requested:
                self._try("resume", job.id)


def _running_on(app: Conveyor, worker: str) -> int:
    jobs = app.list(state=JobState.RUNNING, limit=200)
    return sum(1 for j in jobs if (j.worker_id or "").startswith(f"{worker}:"))


def test_worker_processes_share_jobs_through_kills_pauses_and_cancels(
        pg_url: str, schema: str, fleet: Fleet, tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(20261)
    app = build_app(pg_url, schema=schema, max_size=4)
    try:
        app.store.migrate()
        for name in WORKERS:
            fleet.start(name)
        with admin(pg_url) as conn:
            wait_until(lambda: len(listeners(conn)) == len(WORKERS), 60,
                       "every worker to LISTEN")
        app.enqueue_many(_batch(rng, FIRST_BATCH))

        operator = Operator(app, rng)
        kills = [("w1", 0.15), ("w2", 0.45)]  # (worker, share of jobs finished first)
        killed: dict[str, int] = {}  # worker name -> pid of the killed process
        batches_left = LATER_BATCHES
        deadline = time.monotonic() + 100
        while True:
            assert time.monotonic() < deadline, f"jobs did not finish: {app.counts()}"
            counts = app.counts()
            done = sum(counts[s] for s in (JobState.COMPLETED, JobState.CANCELLED,
                                           JobState.FAILED))
            enqueued = FIRST_BATCH + (LATER_BATCHES - batches_left) * BATCH
            if batches_left and done >= enqueued - 600:
                app.enqueue_many(_batch(rng, BATCH))
                batches_left -= 1
            if kills and done >= kills[0][1] * TOTAL:
                name = kills[0][0]
                if _running_on(app, name) >= 2:  # kill it while it holds jobs
                    killed[name] = fleet.kill(name).pid
                    kills.pop(0)
                    fleet.start(name)
            calm = not kills and not batches_left
            if not calm:
                operator.meddle()
            if calm or rng.random() < 0.3:
                operator.resume_paused()
            if calm and done == TOTAL:
                break
            for name, proc in fleet.procs.items():
                assert proc.alive(), f"worker {name} exited:\n{fleet.report()}"
            time.sleep(0.05)
        run_seconds = time.monotonic() - started

        stopped = fleet.terminate_all(timeout=30)
        assert all(code == 0 for code, _ in stopped.values()), (stopped, fleet.report())
        lost, extra = _check_outcome(pg_url, schema, app, operator, killed, tmp_path)
        for proc in [*fleet.procs.values(), *fleet.retired]:
            assert not proc.tracebacks(), "\n\n".join(proc.tracebacks())
    finally:
        app.close()
    print(f"chaos fleet: {TOTAL} jobs in {run_seconds:.1f}s; killed {killed}; "
          f"{operator.pauses} pauses; {len(operator.cancel_asked)} cancels asked; "
          f"{lost} jobs reaped as lost; {extra} runs completed twice by a killed worker; "
          f"stopped in {max(s for _, s in stopped.values()):.1f}s")


def _check_outcome(pg_url: str, schema: str, app: Conveyor, operator: Operator,
                   killed: dict[str, int], tmp_path: Path) -> tuple[int, int]:
    with admin(pg_url) as conn:
        jobs = {row[0]: row for row in conn.execute(
            f'SELECT id, state, attempt, current_step, params, result '
            f'FROM "{schema}".jobs').fetchall()}
        history: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
        for job_id, action, attempt, actor, reason in conn.execute(
                f'SELECT job_id, action, attempt, actor, reason FROM "{schema}".job_history '
                "ORDER BY id").fetchall():
            history[job_id].append((action, attempt, actor, reason))

    # Nothing lost, nothing left behind.
    assert len(jobs) == TOTAL
    by_state = Counter(row[1] for row in jobs.values())
    assert set(by_state) <= {"completed", "cancelled"}, by_state
    cancelled = {job_id for job_id, row in jobs.items() if row[1] == "cancelled"}
    assert cancelled <= operator.cancel_asked

    # The meddling happened: jobs paused at checkpoints and resumed, failed once and were
    # retried, were cancelled.
    actions = Counter((h[0], h[2] == "chaos-test") for hs in history.values() for h in hs)
    assert actions["pause", False], actions
    assert actions["resume", False], actions
    assert any("Flaky" in h[3] for hs in history.values() for h in hs if h[0] == "fail")
    assert actions["retry", False], actions
    assert actions["cancel", True] + actions["cancel", False], actions

    # Killed workers' jobs were reaped as lost and retried.
    lost_actions = [(job_id, h) for job_id, hs in history.items() for h in hs
                    if h[3].startswith("worker lost")]
    killed_ids = {f"{name}:{pid}" for name, pid in killed.items()}
    assert len(killed) == 2
    assert lost_actions, "the killed workers held jobs, but none was reaped"

    # Completed jobs: resumed from checkpoints to the last step, retried after failing once.
    for job_id, row in jobs.items():
        _, state, attempt, current_step, params, result = row
        if state == "completed":
            assert current_step == params["steps"], row
            assert result == {"steps": params["steps"]}, row
            if params.get("fail_once") and not any(h[0] == "fail" and h[1] == 0
                                                   and h[3].startswith("worker lost")
                                                   for h in history[job_id]):
                assert attempt >= 1, row
                assert any(h[0] == "fail" and "Flaky" in h[3] for h in history[job_id]), \
                    history[job_id]

    # No job ran to completion twice, unless the first such run's worker died before
    # recording it: every run but the recorded one must be from a lost attempt.
    runs: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for c in read_completions(tmp_path / "completions.log"):
        runs[c.job_id].append((c.attempt, c.worker_id, c.pid))
    assert set(runs) <= set(jobs)
    extra = 0
    for job_id, row in jobs.items():
        hs = history[job_id]
        completes = [h for h in hs if h[0] == "complete"]
        assert len(completes) == (row[1] == "completed"), hs
        attempts = [attempt for attempt, _, _ in runs[job_id]]
        assert len(attempts) == len(set(attempts)), (job_id, runs[job_id], hs)
        lost_attempts = {h[1] for h in hs if h[3].startswith("worker lost")}
        for attempt, worker, _ in runs[job_id]:
            if completes and attempt == completes[0][1] and worker == completes[0][2]:
                continue  # the run that was recorded
            extra += 1
            assert attempt in lost_attempts, (job_id, runs[job_id], hs)
            assert worker in killed_ids, (job_id, runs[job_id], hs)
        if completes:
            recorded = [r for r in runs[job_id] if r[0] == completes[0][1]]
            assert len(recorded) == 1, (job_id, runs[job_id], hs)
    assert extra <= 2 * TIMINGS["concurrency"], "more duplicate runs than killed slots"
    assert app.counts()[JobState.RUNNING] == 0
    return len(lost_actions), extra
