"""The PostgreSQL worker's hot path: completions and the next claim sent as one pipeline, rows
read in binary. What it must keep: one transaction (all or nothing), the NOTIFY of changes that
make work, and jobs that read the same as any other read gives them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg
import pytest

from conveyor import transitions
from conveyor.changes import Change, Lease
from conveyor.errors import StoreError
from conveyor.lifecycle import JobState
from conveyor.model import Job, JobError, JobProgress
from conveyor.stores.base import Landed, NewJob
from conveyor.stores.postgres import PostgresStore
from tests.conftest import pg_test_url
from tests.integration.test_postgres_store import _time_to_wake

pytestmark = pytest.mark.postgres
S = JobState


@pytest.fixture
def stores() -> Iterator[tuple[PostgresStore, PostgresStore]]:
    schema = f"wp_{uuid.uuid4().hex[:12]}"
    first = PostgresStore(pg_test_url(), schema=schema)
    first.migrate()
    second = PostgresStore(pg_test_url(), schema=schema)
    yield first, second
    first.close()
    second.close()
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _running(store: PostgresStore, count: int, job_type: str = "t") -> list[Lease]:
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type=job_type, params={})
                       for _ in range(count)])
    jobs = store.claim("w", queues=[], job_types=[job_type], limit=count, lease_seconds=60)
    return [Lease(job.id, job.lease_token or "", job.attempt) for job in jobs]


def test_a_statement_failing_in_the_pipeline_writes_nothing_and_claims_nothing(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    store, _ = stores
    held, doomed = _running(store, 2)
    (waiting,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="next", params={})])
    breaks_a_check = Change(doomed.job_id, "x", frozenset({S.RUNNING}),
                            values={"max_attempts": -1}, lease=doomed)
    with pytest.raises(StoreError):
        store.finish_and_claim([transitions.complete(held, {"n": 1}, "w"), breaks_a_check],
                               "w", queues=[], job_types=["next"], limit=1, lease_seconds=60)
    for lease in (held, doomed):  # the completion beside it was not written either
        job = store.get_job(lease.job_id)
        assert (job.state, job.result, job.lease_token) == (S.RUNNING, None, lease.token)
        assert [h.action for h in store.history(lease.job_id)] == ["create", "start"]
    assert store.get_job(waiting.id).state is S.PENDING  # nor was the claim
    done, claimed = store.finish_and_claim([transitions.complete(held, {"n": 1}, "w")], "w",
                                           queues=[], job_types=["next"], limit=1,
                                           lease_seconds=60)
    assert [job.id for job in claimed] == [waiting.id]  # the connection was left usable
    assert isinstance(done[0], Job) and done[0].result == {"n": 1}


def test_rows_read_by_the_worker_path_are_the_jobs_any_read_gives(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    store, _ = stores
    params = {"big": 2**62, "huge": 1e300, "text": "é\u2028\U0001f600", "none": None}
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params=params,
                              timeout=2.5, unique_key="k")])
    (claimed,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=60)
    assert claimed == store.get_job(claimed.id) and claimed.params == params
    lease = Lease(claimed.id, claimed.lease_token or "", claimed.attempt)
    done, _ = store.finish_and_claim(
        [transitions.complete(lease, [1, {"x": 1.5}], "w", progress=JobProgress(3, 4))], "w",
        queues=[], job_types=["t"], limit=1, lease_seconds=60)
    assert done == [store.get_job(claimed.id)]
    assert isinstance(done[0], Job) and done[0].result == [1, {"x": 1.5}]
    assert done[0].finished_at is not None and done[0].finished_at.utcoffset() is not None


def test_a_batch_that_makes_work_notifies_once_its_changes_landed(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    producer, waiter = stores
    leases = _running(producer, 2)
    for lease in leases:
        producer.apply([transitions.fail(lease, lease.job_id, JobError("E", "x"), "r", "w")])
    retries = [transitions.retry(lease.job_id, "op", "again") for lease in leases]
    assert _time_to_wake(waiter, lambda: producer.apply_many(retries)) < 10
    assert {producer.get_job(lease.job_id).state for lease in leases} == {S.PENDING}


def test_the_worker_pipeline_runs_generic_plans_and_leaves_the_session_as_it_was(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    store, _ = stores
    single = PostgresStore(store.url, schema=store.schema, max_size=1)  # one session to read
    try:
        for _ in range(8):  # past psycopg's prepare threshold (5)
            leases = _running(single, 2)
            done, _ = single.finish_and_claim(
                [transitions.complete(lease, None, "w") for lease in leases], "w",
                queues=[], job_types=["t"], limit=1, lease_seconds=60)
            assert all(isinstance(job, Job) and job.state is S.COMPLETED for job in done)
        plans = single._run("read plans", lambda conn: conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%%unnest%%UPDATE jobs%%'").fetchall())
        mode = single._run("read mode", lambda conn: conn.execute(
            "SHOW plan_cache_mode").fetchone())
    finally:
        single.close()
    # the batch of completions: planned once, not at each call
    assert plans and all(generic > 0 and custom == 0 for generic, custom in plans)
    assert mode == ("auto",)  # the setting lasted the worker's transaction only


def test_a_one_slot_worker_pipeline_turns_to_generic_plans_without_forcing_them(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    """One completion and a claim of one (no batch: no generic_plans statement sent): the
    server still plans each statement a few times only, then runs its generic plan."""
    store, _ = stores
    single = PostgresStore(store.url, schema=store.schema, max_size=1)  # one session to read
    try:
        (lease,) = _running(single, 1)
        single.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={})
                            for _ in range(20)])
        for _ in range(20):  # psycopg prepares at its 5th run, the server turns generic at 5
            done, claimed = single.finish_and_claim(
                [transitions.complete(lease, None, "w")], "w", queues=[], job_types=["t"],
                limit=1, lease_seconds=60, landed_rows=False)
            assert done == [Landed.LANDED] and len(claimed) == 1
            lease = Lease(claimed[0].id, claimed[0].lease_token or "", claimed[0].attempt)
        plans = single._run("read plans", lambda conn: conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%%UPDATE jobs%%'").fetchall())
    finally:
        single.close()
    assert len(plans) == 2  # the one-change statement and the claim
    assert all(generic >= 5 and custom <= 5 for generic, custom in plans), plans


def test_a_kept_claim_statement_is_the_one_compiled_afresh_and_its_parameters_a_copy(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    from conveyor.stores.postgres import worker_path

    store, _ = stores
    args = ("w1", ["b", "a"], ["t", "s", "t"], 3, 30.0)
    first = store._claim_statement(*args)
    first[1]["limit"] = 99  # a caller changing its copy changes nothing kept
    kept = store._claim_statement(*args)
    worker_path._compiled_claim.cache_clear()
    fresh = store._claim_statement(*args)
    assert kept == fresh and kept[1]["limit"] == 3
    assert fresh[1]["job_types"].values == ("s", "t") and fresh[1]["queues"].values == ("a", "b")
    other = store._claim_statement("w2", ["a"], ["t"], 1, 30.0)
    assert (other[1]["worker_id"], other[1]["limit"]) == ("w2", 1)


def _stops_heard(store: PostgresStore, act: Callable[[], object]) -> list[str]:
    """The payloads sent on the store's stop channel while ``act`` ran (and committed)."""
    heard: list[str] = []
    with psycopg.connect(pg_test_url(), autocommit=True) as conn:
        conn.add_notify_handler(lambda n: heard.append(n.payload))
        conn.execute(f'LISTEN "{store._settings.stop_channel}"')
        act()
        time.sleep(0.3)  # the listening session relays what the commit sent, then:
        conn.execute("SELECT 1")  # a round trip, in which the handler reads it
    return sorted(set(heard))


def test_only_a_watched_job_is_announced_when_it_stops(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    worker, waiter = stores
    watched, unwatched, single = _running(worker, 3)
    woken = threading.Event()
    unwatch = waiter.watch_job(watched.job_id, woken.set)
    unwatch_single = waiter.watch_job(single.job_id, lambda: None)
    try:
        heard = _stops_heard(worker, lambda: worker.finish_and_claim(
            [transitions.complete(lease, None, "w") for lease in (watched, unwatched)], "w",
            queues=[], job_types=["t"], limit=1, lease_seconds=60))
        assert heard == [watched.job_id]  # the batch statement
        assert woken.wait(10)
        heard = _stops_heard(worker, lambda: worker.apply(
            [transitions.complete(single, None, "w")]))
        assert heard == [single.job_id]  # the one-change statement
    finally:
        unwatch()
        unwatch_single()
    assert {worker.get_job(lease.job_id).state
            for lease in (watched, unwatched, single)} == {S.COMPLETED}


@pytest.mark.parametrize("batched", [False, True])
def test_brief_rows_give_the_whole_row_only_for_a_job_with_dependents(
        stores: tuple[PostgresStore, PostgresStore], batched: bool) -> None:
    """``landed_rows=False`` (brief rows, see statements.brief_change): a job with dependents
    still gives the row the plain statement gives, the others LANDED, a lost lease None;
    alone (one-change statement) or in a batch."""
    store, _ = stores
    jobs = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="t", params={"p": 1})
                              for _ in range(3)])
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="later", params={},
                              depends_on=(jobs[0].id,))])
    claimed = {job.id: job for job in store.claim("w", queues=[], job_types=["t"], limit=3,
                                                 lease_seconds=60)}
    upstream, plain, lost = (claimed[job.id] for job in jobs)
    assert upstream.has_dependents and not plain.has_dependents

    def lease(job: Job, token: str | None = None) -> Lease:
        return Lease(job.id, token or job.lease_token or "", job.attempt)

    rounds = ([[upstream], [plain], [lost]] if not batched else [[upstream, plain, lost]])
    done: list[Job | Landed | None] = []
    for group in rounds:
        done += store.finish_and_claim(
            [transitions.complete(lease(job, "stale" if job is lost else None), {"r": 2}, "w")
             for job in group], "w", queues=[], job_types=[], limit=0, lease_seconds=60,
            landed_rows=False)[0]
    whole = store.get_job(upstream.id)
    assert done == [whole, Landed.LANDED, None]
    assert whole.state is S.COMPLETED and whole.result == {"r": 2} and whole.params == {"p": 1}
    assert store.get_job(plain.id).result == {"r": 2}
    assert store.get_job(lost.id).state is S.RUNNING


def test_brief_rows_still_announce_a_watched_job_when_it_stops(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    worker, waiter = stores
    watched, unwatched, single = _running(worker, 3)
    unwatch = [waiter.watch_job(lease.job_id, lambda: None) for lease in (watched, single)]
    try:
        for leases in ([watched, unwatched], [single]):  # the batch, then one change alone
            changes = [transitions.complete(lease, None, "w") for lease in leases]

            def finish(changes: list[Change] = changes) -> object:
                return worker.finish_and_claim(changes, "w", queues=[], job_types=[], limit=0,
                                               lease_seconds=60, landed_rows=False)

            assert _stops_heard(worker, finish) == [leases[0].job_id]
    finally:
        for stop in unwatch:
            stop()


def test_a_schema_of_version_8_migrates_and_its_jobs_are_announced_once_watched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.stores.postgres import store as store_module

    schema = f"wp_{uuid.uuid4().hex[:12]}"
    eight = [m for m in store_module._MIGRATIONS if m[0] <= 8]
    try:
        with monkeypatch.context() as patched:
            patched.setattr(store_module, "_MIGRATIONS", eight)
            patched.setattr(store_module, "LATEST_VERSION", 8)
            old = PostgresStore(pg_test_url(), schema=schema)
            old.migrate()
            leases = _running(old, 2)
            old.close()
        store = PostgresStore(pg_test_url(), schema=schema)
        store.migrate()
        try:
            assert store.get_job(leases[0].job_id).state is S.RUNNING  # kept, as it was
            unwatch = store.watch_job(leases[0].job_id, lambda: None)
            heard = _stops_heard(store, lambda: store.apply_many(
                [transitions.complete(lease, None, "w") for lease in leases]))
            unwatch()
            assert heard == [leases[0].job_id]
        finally:
            store.close()
    finally:
        with psycopg.connect(pg_test_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_kept_cursors_serve_later_transactions_and_a_statement_twice_in_one(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    from conveyor.stores.postgres.worker_path import PostgresWorkerPath

    schema = stores[0].schema
    store = PostgresStore(pg_test_url(), schema=schema, max_size=1)  # one connection
    try:
        for round_ in range(3):
            first, second = _running(store, 2, job_type=f"r{round_}")
            widened = transitions.complete(second, "b", "w")
            widened = replace(widened, when=widened.when | {S.PAUSED})  # a shape of its own
            changes = [transitions.complete(first, "a", "w"), widened]
            # two shapes, one statement text: two statements of the same text in one pipeline
            statements = PostgresWorkerPath._finish_statements(store, changes)
            assert len(statements) == 2 and statements[0][1] == statements[1][1]
            (waiting,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()),
                                                   job_type=f"n{round_}", params={})])
            done, claimed = store.finish_and_claim(changes, "w", queues=[],
                                                   job_types=[f"n{round_}"], limit=1,
                                                   lease_seconds=60)
            assert done == [store.get_job(first.job_id), store.get_job(second.job_id)]
            assert [(j.result, j.state) for j in done if isinstance(j, Job)] == [
                ("a", S.COMPLETED), ("b", S.COMPLETED)]
            assert claimed == [store.get_job(waiting.id)]
    finally:
        store.close()


def _waiting(store: PostgresStore, job_type: str, priorities: list[int]) -> list[Job]:
    return store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type=job_type, params={},
                                     priority=priority) for priority in priorities])


def test_claim_alone_runs_on_the_kept_cursor_and_gives_the_jobs_any_read_gives(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    """A claim with nothing to finish (claim()) uses the connection's kept cursor for its
    statement, as the pipeline does; its jobs read as get_job reads them, call after call."""
    store = PostgresStore(pg_test_url(), schema=stores[0].schema, max_size=1)
    try:
        _waiting(store, "t", [0, 1, 0, 1, 0, 1])
        for expected in ([1], [1, 1], [0, 0], [0], []):
            claimed = store.claim("w", queues=[], job_types=["t"], limit=len(expected) or 1,
                                  lease_seconds=60)
            assert [job.priority for job in claimed] == expected
            assert claimed == [store.get_job(job.id) for job in claimed]
            assert all(job.state is S.RUNNING for job in claimed)
        statement = store._claim_statement("w", [], ["t"], 1, 60.0)[0]
        kept = store._run("kept", lambda conn: dict(getattr(conn, "_conveyor_cursors", {})))
        assert statement in kept
    finally:
        store.close()


def test_heartbeats_and_progress_on_kept_cursors_renew_only_held_leases_call_after_call(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    """heartbeat() and save_progress() run on the connection's kept cursors: each call still
    renews (or saves) only what its lease holds, a lost lease among held ones included."""
    from conveyor.errors import LeaseLost

    store = PostgresStore(pg_test_url(), schema=stores[0].schema, max_size=1)
    try:
        held, other = _running(store, 2)
        lost = Lease(other.job_id, "stale", other.attempt)
        for step in range(1, 4):
            signals = store.heartbeat([held, lost], 60.0)
            assert list(signals) == [held.token] and signals[held.token].renewed
            store.save_progress(held, JobProgress(step, 3))
            assert store.get_job(held.job_id).progress.current_step == step
            with pytest.raises(LeaseLost):
                store.save_progress(lost, JobProgress(step, 3), checkpoint=True)
            assert store.get_job(other.job_id).progress.current_step == 0
    finally:
        store.close()


def test_a_claim_of_one_takes_the_jobs_in_the_order_a_claim_of_many_returns_them(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    """The claim of one job (one_row_claim: no ORDER BY of its one row, no ordering columns
    returned) picks as the plain claim orders: a job waiting to be resumed first, then by
    priority and place in line; each claimed job reads as get_job reads it, its history as
    a plain claim writes it."""
    from conveyor.stores.postgres import worker_path

    store, _ = stores
    plain_schema = f"wp_{uuid.uuid4().hex[:12]}"
    plain = PostgresStore(pg_test_url(), schema=plain_schema)
    try:
        plain.migrate()
        for target in (store, plain):
            _waiting(target, "t", [0, 2, 1, 2, 0])
            target.insert_jobs([NewJob(id=f"p-{uuid.uuid4()}", job_type="t", params={})])
            (held,) = target.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=60)
            assert held.priority == 2 and held.state is S.RUNNING
            lease = Lease(held.id, held.lease_token or "", held.attempt)
            target.apply([transitions.pause_at_checkpoint(lease, None, "w", resume=True)])
        one_by_one: list[Job] = []
        while claimed := store.finish_and_claim([], "w", queues=[], job_types=["t"],
                                                limit=1, lease_seconds=60)[1]:
            assert len(claimed) == 1 and claimed == [store.get_job(claimed[0].id)]
            one_by_one += claimed
        many = plain.claim("w", queues=[], job_types=["t"], limit=10, lease_seconds=60)
        assert [(j.priority, j.paused_at is not None) for j in one_by_one] == [
            (j.priority, j.paused_at is not None) for j in many] == [
            (2, True), (2, False), (1, False), (0, False), (0, False), (0, False)]
        assert [[h.action for h in store.history(j.id)][-1] for j in one_by_one] == [
            [h.action for h in plain.history(j.id)][-1] for j in many]
        statement = store._claim_statement("w", [], ["t"], 1, 60.0)[0]
        assert "ORDER BY pick_rank, pick_priority DESC, pick_at, seq" not in statement
        assert statement.rstrip().endswith("SELECT * FROM started;")
        assert "ORDER BY pick_rank" in store._claim_statement("w", [], ["t"], 2, 60.0)[0]
        with pytest.raises(AssertionError):
            worker_path.one_row_claim("SELECT 1")
    finally:
        plain.close()
        with psycopg.connect(pg_test_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{plain_schema}" CASCADE')


def test_a_brief_row_spreads_its_whole_row_by_the_columns_the_table_has_now(
        stores: tuple[PostgresStore, PostgresStore]) -> None:
    """A job with dependents sends its row as one composite value (brief rows): spread into
    the table's columns as the plain statement gives them, NULLs and JSON included, and by
    the table's columns read again when their number changed under a running store."""
    store, _ = stores
    single = PostgresStore(store.url, schema=store.schema, max_size=1)
    try:
        for extra in (False, True):
            (up,) = single.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="up",
                                               params={"p": [1, None]})])
            single.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="down", params={},
                                       depends_on=(up.id,))])
            (job,) = single.claim("w", queues=[], job_types=["up"], limit=1, lease_seconds=60)
            lease = Lease(job.id, job.lease_token or "", job.attempt)
            (done,), _ = single.finish_and_claim(
                [transitions.complete(lease, {"r": None}, "w")], "w", queues=[],
                job_types=[], limit=0, lease_seconds=60, landed_rows=False)
            assert isinstance(done, Job) and done == single.get_job(up.id)
            assert done.result == {"r": None} and done.error is None and done.paused_at is None
            if not extra:
                single._run("add a column", lambda conn: conn.execute(
                    "ALTER TABLE jobs ADD COLUMN extra integer DEFAULT 7"))
        columns = single._run("kept", lambda conn: conn._conveyor_job_columns)  # type: ignore[attr-defined]
        assert columns[-1] == "extra"
    finally:
        single.close()


def test_a_brief_row_sent_through_psycopg_spreads_its_whole_row_the_same(
        stores: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline through psycopg's cursors (a wake-up's transaction, or a parameter wire
    leaves to psycopg) reads ``whole`` as the same bytes: spread the same."""
    from conveyor.stores.postgres import wire

    store, _ = stores
    (up,) = store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="up", params={})])
    store.insert_jobs([NewJob(id=str(uuid.uuid4()), job_type="down", params={},
                              depends_on=(up.id,))])
    (job,) = store.claim("w", queues=[], job_types=["up"], limit=1, lease_seconds=60)
    monkeypatch.setattr(wire, "run", lambda *args, **kwargs: None)
    (done,), _ = store.finish_and_claim(
        [transitions.complete(Lease(job.id, job.lease_token or "", job.attempt), [1], "w")],
        "w", queues=[], job_types=[], limit=0, lease_seconds=60, landed_rows=False)
    assert isinstance(done, Job) and done == store.get_job(up.id) and done.result == [1]
