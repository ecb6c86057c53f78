"""Contract: ``app.start(job_id)`` claims exactly one job by id, on every store.

Racers are real: threads on separate store instances (separate connections), and separate
processes opening the same database, released together by a barrier.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from conveyor import Conveyor, transitions
from conveyor.changes import ChangeRefused
from conveyor.errors import ConveyorError, InvalidStateError, JobNotFound
from conveyor.lifecycle import JobState
from conveyor.stores.base import Store
from tests.contract.helpers import in_state, insert

S = JobState
RACERS = 4
WAIT = 30.0


@pytest.fixture
def app(store: Store) -> Conveyor:
    return Conveyor(store=store)


def test_start_claims_a_pending_job_with_a_lease(app: Conveyor) -> None:
    job = insert(app.store, "mine")
    started = app.start(job.id, worker="runner-1", lease_seconds=60)
    assert (started.state, started.worker_id) == (S.RUNNING, "runner-1")
    assert started.lease_token and started.lease_expires_at is not None
    assert started.started_at is not None
    assert app.store.history(job.id)[-1].action == "start"


def test_start_resumes_a_paused_job_with_a_resume_requested(app: Conveyor) -> None:
    job = in_state(app.store, S.PAUSED)
    with pytest.raises(InvalidStateError, match="from paused to running: resume it first"):
        app.start(job.id)
    app.resume(job.id)
    started = app.start(job.id)
    assert (started.state, started.resume_requested) == (S.RUNNING, False)
    assert app.store.history(job.id)[-1].action == "resume"


@pytest.mark.parametrize("state", [S.RUNNING, S.COMPLETED, S.CANCELLED, S.FAILED])
def test_start_of_a_job_that_is_not_startable_names_its_state(app: Conveyor,
                                                              state: JobState) -> None:
    job = in_state(app.store, state, max_attempts=0)
    history = len(app.store.history(job.id))
    with pytest.raises(InvalidStateError) as refused:
        app.start(job.id)
    assert str(refused.value) == f"Cannot transition from {state.value} to running"
    assert refused.value.from_state == state.value
    assert app.get(job.id).to_dict() == job.to_dict()
    assert len(app.store.history(job.id)) == history


def test_start_of_an_unknown_job(app: Conveyor) -> None:
    with pytest.raises(JobNotFound):
        app.start(str(uuid.uuid4()))


def test_start_of_a_job_not_yet_due_is_refused(app: Conveyor) -> None:
    job = insert(app.store, "later", run_at=app.store.now().replace(year=2100))
    with pytest.raises(InvalidStateError, match="from pending to running: not due until 2100"):
        app.start(job.id)
    assert app.get(job.id).state is S.PENDING


def test_the_store_refuses_a_claim_by_id_of_a_job_not_yet_due(app: Conveyor) -> None:
    """The due guard is in the compare-and-set itself, not only in the app's decision."""
    job = insert(app.store, "later", run_at=app.store.now().replace(year=2100))
    claim = replace(transitions.start(job.id, S.PENDING, "w", "token", 30.0), due=True)
    with pytest.raises(ChangeRefused):
        app.store.apply([claim])


def test_threads_racing_start_exactly_one_wins(store_factory: Callable[[], Store],
                                               store: Store) -> None:
    for _ in range(3):
        job = insert(store, "race")
        outcomes = _race_in_threads(store_factory, job.id)
        _exactly_one_won(store, job.id, outcomes)


def _race_in_threads(store_factory: Callable[[], Store], job_id: str) -> list[Any]:
    """Each racer on its own store instance (its own connection), released together."""
    barrier = threading.Barrier(RACERS)
    outcomes: list[Any] = []

    def racer(n: int) -> None:
        app = Conveyor(store=store_factory())
        barrier.wait(WAIT)
        try:
            outcomes.append(app.start(job_id, worker=f"t{n}"))
        except ConveyorError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return outcomes


def _exactly_one_won(store: Store, job_id: str, outcomes: list[Any]) -> None:
    assert len(outcomes) == RACERS
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    for lost in losers:
        assert isinstance(lost, InvalidStateError), lost
        assert str(lost) == "Cannot transition from running to running"
    job = store.get_job(job_id)
    assert job.lease_token == winners[0].lease_token
    assert [h.action for h in store.history(job_id)].count("start") == 1


def _start_in_process(url: str, options: dict[str, Any], job_id: str, name: str,
                      barrier: Any, results: Any) -> None:
    app = Conveyor(url, **options)
    try:
        barrier.wait(WAIT)
        job = app.start(job_id, worker=name)
        results.put({"token": job.lease_token})
    except ConveyorError as exc:
        results.put({"error": type(exc).__name__, "message": str(exc)})
    finally:
        app.close()


def test_processes_racing_start_exactly_one_wins(store: Store) -> None:
    job = insert(store, "race")
    options = {"schema": store.schema} if hasattr(store, "schema") else {}
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(RACERS), context.Queue()
    processes = [context.Process(target=_start_in_process,
                                 args=(store.url, options, job.id, f"p{n}", barrier, results))
                 for n in range(RACERS)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=WAIT * 2) for _ in processes]
    for process in processes:
        process.join(WAIT)
        assert process.exitcode == 0
    winners = [o for o in outcomes if "token" in o]
    assert len(winners) == 1, outcomes
    assert [o for o in outcomes if "error" in o] == [
        {"error": "InvalidStateError",
         "message": "Cannot transition from running to running"}] * (RACERS - 1)
    assert store.get_job(job.id).lease_token == winners[0]["token"]
    assert [h.action for h in store.history(job.id)].count("start") == 1
