"""Two ``start()``s on one job from two processes on one SQLite file: exactly one succeeds.

The racers are separate interpreters (``multiprocessing`` with ``spawn``), each with its own
connection, released together by a shared barrier before every call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.stores.base import NewJob
from tests.integration.procs import claimer

pytestmark = pytest.mark.slow
ROUNDS = 50
BULK_JOBS = 500
BULK_PROCS = 4


@pytest.fixture
def app(db_url: str) -> Iterator[Conveyor]:
    app = Conveyor(db_url)
    app.store  # noqa: B018 - create the schema before the racers open the file
    yield app
    app.close()


@contextlib.contextmanager
def racers(target: Any, arg_lists: list[tuple[Any, ...]]) -> Iterator[None]:
    """Run ``target(*args, barrier, ...)`` in one spawned process per argument tuple."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(arg_lists))
    procs = [ctx.Process(target=target, args=(args[0], barrier, *args[1:]), daemon=True)
             for args in arg_lists]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(90)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        yield
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
            proc.close()


def insert(app: Conveyor, job_types: list[str]) -> list[str]:
    news = [NewJob(id=str(uuid.uuid4()), job_type=t, params={}) for t in job_types]
    return [job.id for job in app.store.insert_jobs(news, actor="test")]


def test_two_processes_starting_one_job_exactly_one_wins(app: Conveyor,
                                                        tmp_path: Path) -> None:
    claim_types = [f"race.claim.{i}" for i in range(ROUNDS)]
    claim_ids = insert(app, claim_types)
    start_ids = insert(app, ["race.start"] * ROUNDS)
    outs = [tmp_path / "p1.txt", tmp_path / "p2.txt"]
    with racers(claimer.pair_rounds,
                [(app.url, name, claim_types, start_ids, str(out))
                 for name, out in zip(("p1", "p2"), outs, strict=True)]):
        results = {name: out.read_text().split("\n")[:-1]
                   for name, out in zip(("p1", "p2"), outs, strict=True)}

    for index, job_id in enumerate(claim_ids):
        got = {name: lines[index].split()[2] for name, lines in results.items()}
        winners = [name for name, value in got.items() if value == job_id]
        assert len(winners) == 1, f"claim round {index}: {got}"
        assert sorted(got.values()) == sorted([job_id, "-"]), got
        history = app.history(job_id)
        starts = [h.actor for h in history if h.action == "start"]
        assert starts == winners, f"claim round {index}: {starts}"
        job = app.get(job_id)
        assert job.state is JobState.RUNNING
        assert job.worker_id == winners[0]

    for index, job_id in enumerate(start_ids):
        got = {name: lines[ROUNDS + index].split()[2] for name, lines in results.items()}
        winners = [name for name, value in got.items() if value == "ok"]
        assert len(winners) == 1, f"start round {index}: {got}"
        starts = [h.actor for h in app.history(job_id) if h.action == "start"]
        assert starts == winners, f"start round {index}: {starts}"
        assert app.get(job_id).worker_id == winners[0]


def test_four_processes_claim_five_hundred_jobs_each_exactly_once(app: Conveyor,
                                                                tmp_path: Path) -> None:
    job_ids = insert(app, ["race.bulk"] * BULK_JOBS)
    names = [f"c{i}" for i in range(BULK_PROCS)]
    outs = [tmp_path / f"{name}.txt" for name in names]
    with racers(claimer.drain, [(app.url, name, "race.bulk", str(out))
                                for name, out in zip(names, outs, strict=True)]):
        claims = {name: out.read_text().split() for name, out in zip(names, outs, strict=True)}

    counts = Counter(job_id for ids in claims.values() for job_id in ids)
    assert set(counts) == set(job_ids), "every job claimed"
    twice = [job_id for job_id, n in counts.items() if n > 1]
    assert twice == [], f"{len(twice)} jobs claimed twice"
    owner = {job_id: name for name, ids in claims.items() for job_id in ids}
    jobs = app.store.get_jobs(job_ids)
    assert all(job.state is JobState.RUNNING for job in jobs)
    assert {job.id: job.worker_id for job in jobs} == owner
    for job_id in job_ids:
        starts = [h.actor for h in app.history(job_id) if h.action == "start"]
        assert starts == [owner[job_id]]
    assert sum(len(ids) > 0 for ids in claims.values()) >= 2, (
        f"the claims did not overlap in time: {[len(v) for v in claims.values()]}")
