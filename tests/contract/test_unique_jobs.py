"""Contract: unique jobs. At most one unfinished job holds a key, on every store.

The key is enforced by a partial unique index, so the tests race real separate processes
(each with its own connection) as well as checking the scope and the two conflict modes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, DuplicateJob, EnqueueRequest, InvalidParams
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError
from conveyor.lifecycle import JobState
from conveyor.stores.base import Store
from tests.integration.procs.scheduling import enqueue_unique


def _app(store: Store) -> Conveyor:
    app = Conveyor(store=store)

    @app.job("race.sync")
    def sync(ctx: JobContext, n: int = 0) -> int:
        return n

    return app


def test_a_held_key_returns_the_holder_flagged_and_writes_nothing(store: Store) -> None:
    app = _app(store)
    seen: list[object] = []
    app.subscribe(seen.append)
    first = app.enqueue("race.sync", {"n": 1}, unique_key="sync:42")
    again = app.enqueue("race.sync", {"n": 2}, unique_key="sync:42")
    assert (first.existing, again.existing) == (False, True)
    assert again.id == first.id and again.params == {"n": 1}
    assert first.unique_key == "sync:42" and first.to_dict()["unique_key"] == "sync:42"
    assert len(app.list()) == 1 and len(seen) == 1  # one job, one JobCreated
    with pytest.raises(DuplicateJob) as raised:
        app.enqueue("race.sync", unique_key="sync:42", on_conflict="raise")
    assert raised.value.job.id == first.id
    assert len(app.list()) == 1


def test_a_finished_holder_frees_the_key(store: Store) -> None:
    app = _app(store)
    first = app.enqueue("race.sync", unique_key="sync:7")
    app.cancel(first.id)
    second = app.enqueue("race.sync", unique_key="sync:7")
    assert second.id != first.id and not second.existing
    assert app.get(first.id).state is JobState.CANCELLED


def test_a_batch_gets_holders_in_place_or_fails_whole(store: Store) -> None:
    app = _app(store)
    held = app.enqueue("race.sync", unique_key="k1")
    jobs = app.enqueue_many([EnqueueRequest("race.sync", unique_key="k1"),
                             EnqueueRequest("race.sync", unique_key="k2"),
                             EnqueueRequest("race.sync", unique_key="k2"),
                             EnqueueRequest("race.sync")])
    assert [j.existing for j in jobs] == [True, False, True, False]
    assert jobs[0].id == held.id and jobs[2].id == jobs[1].id
    before = len(app.list())
    with pytest.raises(DuplicateJob):
        app.enqueue_many([EnqueueRequest("race.sync", unique_key="k3"),
                          EnqueueRequest("race.sync", unique_key="k1", on_conflict="raise")])
    assert len(app.list()) == before  # k3 was rolled back with the batch
    assert not [j for j in app.list() if j.unique_key == "k3"]


def test_bad_keys_are_refused_before_any_write(store: Store) -> None:
    app = _app(store)
    for key in ("", "a\nb", "x" * 201, 42):
        with pytest.raises(InvalidParams):
            app.enqueue("race.sync", unique_key=key)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        app.enqueue("race.sync", unique_key="ok", on_conflict="replace")
    assert app.list() == []


def test_two_processes_racing_on_one_key_create_one_job(store: Store, tmp_path: Path) -> None:
    keys = [f"race:{i}" for i in range(8)]
    options: dict[str, Any] = {}
    if hasattr(store, "schema"):
        options["schema"] = store.schema
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [str(tmp_path / f"racer{i}.txt") for i in range(2)]
    procs = [ctx.Process(target=enqueue_unique, args=(store.url, barrier, options, keys, out),
                         daemon=True) for out in outs]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            with contextlib.suppress(ValueError):
                proc.close()
    got: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for out in outs:
        for line in Path(out).read_text(encoding="utf-8").splitlines():
            key, job_id, how = line.split()
            got[key].append((job_id, how))
    for key in keys:
        (id_a, how_a), (id_b, how_b) = got[key]
        assert id_a == id_b, key  # both racers hold the same job
        assert sorted((how_a, how_b)) == ["created", "existing"], key
    stored = _app(store).list(limit=100)
    assert sorted(j.unique_key or "" for j in stored) == sorted(keys)


def test_batches_taking_the_same_keys_in_opposite_orders_both_succeed(
        store: Store, store_factory: Callable[[], Store]) -> None:
    apps = [_app(store), _app(store_factory())]
    keys = [f"batch:{i}" for i in range(400)]
    barrier = threading.Barrier(2)
    got: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        order = keys if index == 0 else keys[::-1]
        try:
            barrier.wait(30)
            jobs = apps[index].enqueue_many([EnqueueRequest("race.sync", unique_key=k)
                                             for k in order])
            got[index] = [j.id for j in (jobs if index == 0 else jobs[::-1])]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert got[0] == got[1] and len(set(got[0])) == len(keys)
    assert len(apps[0].list(limit=1000)) == len(keys)
