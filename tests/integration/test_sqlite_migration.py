"""SQLite: a database written by the schema before the "history_by_seq" migration (history
keyed by the job's id, AUTOINCREMENT tables) migrates with its jobs, history, dependencies
and logs intact, and everything keeps working on it: claims, the dependency triggers,
history reads, the cascades that delete a job's rows.

The old database is built by this store's own code, with the migrations and the history
statements as they were before that migration (patched in, with the ones written since in the
old table's shape); the version is found by the migration's name, never written here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from conveyor import transitions
from conveyor.changes import Lease
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, JobError
from conveyor.stores.base import JobQuery, NewJob, NewLogLine
from conveyor.stores.sqlite import SQLiteStore
from conveyor.stores.sqlite import dash as dash_module
from conveyor.stores.sqlite import flow as flow_module
from conveyor.stores.sqlite import store as store_module
from conveyor.stores.sqlite.dash import SMALL_BACKLOG, backlog_probe, count_clauses, filter_clause

_OLD_QUERIES = {
    "insert_history": "INSERT INTO job_history (job_id, at, action, from_state, to_state, "
                      "attempt, actor, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "select_history": "SELECT * FROM job_history WHERE job_id = ? ORDER BY id",
    # statements written since, in the old table's shape (no job_seq column)
    "insert_history_seq": "INSERT INTO job_history (job_id, at, action, from_state, to_state, "
                          "attempt, actor, reason) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    "insert_created_after": "INSERT INTO job_history (job_id, at, action, from_state, "
                            "to_state, attempt, actor, reason) SELECT id, ?1, 'create', NULL, "
                            "'pending', 0, ?2, '' FROM jobs WHERE seq > ?3 ORDER BY seq",
    "insert_created_last": "INSERT INTO job_history (job_id, at, action, from_state, to_state, "
                           "attempt, actor, reason) VALUES (?1, ?2, 'create', NULL, 'pending', "
                           "0, ?3, '')",
}
_IDS = ["j0", "j1", "j2", "j3", "down", "keyed"]


@contextlib.contextmanager
def _old_store(db_url: str) -> Iterator[SQLiteStore]:
    """A store at the version before ``history_by_seq``, running the statements of then."""
    with _store_before(db_url, "history_by_seq", _OLD_QUERIES) as store:
        yield store


def _complete(store: SQLiteStore, job: Job) -> None:
    assert job.lease_token is not None
    store.apply([transitions.complete(Lease(job.id, job.lease_token, job.attempt), "ok", "w")])


def _sql(store: SQLiteStore, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as conn:
        return [tuple(row) for row in conn.execute(query)]


def _fill(old: SQLiteStore) -> tuple[Job, dict[str, Job], dict[str, list[HistoryEntry]]]:
    """Pending, running and completed jobs, a dependency, a unique key, a log line."""
    assert "AUTOINCREMENT" in str(_sql(old, "SELECT sql FROM sqlite_master WHERE name = 'jobs'"))
    old.insert_jobs([NewJob(id=f"j{n}", job_type="t", params={"n": n}) for n in range(4)])
    old.insert_jobs([NewJob(id="down", job_type="t", params={}, depends_on=("j0",)),
                     NewJob(id="keyed", job_type="t", params={}, unique_key="k")])
    first, second = old.claim("w", queues=[], job_types=["t"], limit=2, lease_seconds=60)
    assert [first.id, second.id] == ["j0", "j1"]
    _complete(old, second)  # j1 finished, j0 still running with a dependent waiting
    old.write_job_logs([NewLogLine("j1", 1, 0, datetime.now(UTC), "INFO", "hello")])
    return first, {i: old.get_job(i) for i in _IDS}, {i: old.history(i) for i in _IDS}


def test_an_old_database_migrates_with_its_rows_and_keeps_working(
        db_url: str) -> None:
    with _old_store(db_url) as old:
        first, jobs, history = _fill(old)
    new = SQLiteStore(db_url)
    try:
        new.migrate()
        assert new.schema_version() == store_module.LATEST_VERSION
        assert {i: new.get_job(i) for i in _IDS} == jobs
        assert {i: new.history(i) for i in _IDS} == history
        assert [line.message for line in new.job_logs("j1")] == ["hello"]
        assert _sql(new, "SELECT name FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'") \
            == [("job_logs",)]
        # the unique key is still held, the trigger still fires, claims keep their order
        (same,) = new.insert_jobs([NewJob(id="again", job_type="t", params={}, unique_key="k")])
        assert same.id == "keyed" and same.existing
        _complete(new, first)
        claimed = new.claim("w", queues=[], job_types=["t"], limit=4, lease_seconds=60)
        assert [j.id for j in claimed] == ["j2", "j3", "down", "keyed"]
        assert [h.action for h in new.history("j0")] == ["create", "start", "complete"]
        assert [h.id for h in new.history("j0")] == sorted(h.id for h in new.history("j0"))
        # deleting a finished job deletes its history and logs with it (the cascades)
        assert new.prune_jobs(JobState.COMPLETED, -1.0, limit=10) == 2
        assert _sql(new, "SELECT DISTINCT job_id FROM job_history ORDER BY job_id") \
            == [("down",), ("j2",), ("j3",), ("keyed",)]
        assert _sql(new, "SELECT count(*) FROM job_logs") == [(0,)]
        new.insert_jobs([NewJob(id="later", job_type="t", params={})])
        assert [(h.job_id, h.action) for h in new.history("later")] == [("later", "create")]
    finally:
        new.close()


def test_a_dependency_cancelled_after_the_migration_cancels_its_dependent_with_history(
        db_url: str) -> None:
    with _old_store(db_url) as old:
        old.insert_jobs([NewJob(id="up", job_type="t", params={})])
        old.insert_jobs([NewJob(id="down", job_type="t", params={}, depends_on=("up",))])
    new = SQLiteStore(db_url)
    try:
        new.migrate()
        new.apply([transitions.cancel_idle("up", JobState.PENDING, "operator", "no")])
        assert new.get_job("down").state is JobState.CANCELLED
        (entry,) = [h for h in new.history("down") if h.action == "cancel"]
        assert entry.reason == "dependency up was cancelled"
    finally:
        new.close()


def test_a_seq_used_again_after_a_prune_never_shows_the_deleted_jobs_rows(db_url: str) -> None:
    """Without AUTOINCREMENT the newest job's seq is taken again once that job is deleted:
    its history went with it, so the new job's history is its own."""
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        store.insert_jobs([NewJob(id="gone", job_type="t", params={})])
        (job,) = store.claim("w", queues=[], job_types=["t"], limit=1, lease_seconds=60)
        _complete(store, job)
        assert store.prune_jobs(JobState.COMPLETED, -1.0, limit=10) == 1
        store.insert_jobs([NewJob(id="new", job_type="t", params={})])
        assert _sql(store, "SELECT seq FROM jobs") == [(1,)]  # the deleted job's seq
        assert [(h.job_id, h.action) for h in store.history("new")] == [("new", "create")]
        assert _sql(store, "SELECT job_id FROM job_history") == [("new",)]
    finally:
        store.close()


# -- version 10 ("lighter_writes"): the jobs table rebuilt, one dependency trigger ---------------
@contextlib.contextmanager
def _store_before(db_url: str, migration: str,
                  queries: dict[str, str] | None = None) -> Iterator[SQLiteStore]:
    """A store at the version before ``migration`` (found by its name), running ``queries``
    (the statements of then) in place of today's of the same names."""
    names = [name for _, name, _ in store_module._MIGRATIONS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "_MIGRATIONS",
                      store_module._MIGRATIONS[:names.index(migration)])
        for name, statement in (queries or {}).items():  # in the file's dict that has it
            patch.setitem(next(q for q in (flow_module._Q, store_module._Q) if name in q),
                          name, statement)
        store = SQLiteStore(db_url)
        try:
            store.migrate()
            yield store
        finally:
            store.close()


def _end(store: SQLiteStore, job: Job, *, ok: bool) -> None:
    assert job.lease_token is not None
    lease = Lease(job.id, job.lease_token, job.attempt)
    store.apply([transitions.complete(lease, "ok", "w") if ok else
                 transitions.fail(lease, job.id, JobError("E", "boom"), "raised E", "w")])


def test_a_version_9_database_migrates_to_10_with_its_rows_and_its_dependencies_working(
        db_url: str) -> None:
    ids = ["ok", "bad", "idle", "after_ok", "after_bad", "run_anyway", "after_idle", "done"]
    with _store_before(db_url, "lighter_writes") as old:
        old.insert_jobs([NewJob(id="done", job_type="t", params={}),
                         NewJob(id="ok", job_type="t", params={"n": 1}),
                         NewJob(id="bad", job_type="t", params={}, max_attempts=0),
                         NewJob(id="idle", job_type="u", params={}, unique_key="k")])
        old.insert_jobs([
            NewJob(id="after_ok", job_type="t", params={}, depends_on=("ok",)),
            NewJob(id="after_bad", job_type="t", params={}, depends_on=("bad",)),
            NewJob(id="run_anyway", job_type="t", params={}, depends_on=("bad",),
                   on_dependency_failure="run"),
            NewJob(id="after_idle", job_type="t", params={}, depends_on=("idle",))])
        claimed = old.claim("w", queues=[], job_types=["t"], limit=3, lease_seconds=60)
        assert [j.id for j in claimed] == ["done", "ok", "bad"]
        _end(old, claimed[0], ok=True)
        jobs = {i: old.get_job(i) for i in ids}
        history = {i: old.history(i) for i in ids}
    new = SQLiteStore(db_url)
    try:
        new.migrate()
        assert new.schema_version() == store_module.LATEST_VERSION
        assert {i: new.get_job(i) for i in ids} == jobs
        assert {i: new.history(i) for i in ids} == history
        assert _sql(new, "SELECT name FROM sqlite_master WHERE type = 'trigger'") \
            == [("jobs_dependency_ended",)]
        assert _sql(new, "PRAGMA foreign_key_check") == []
        assert _sql(new, "PRAGMA integrity_check") == [("ok",)]
        (table,) = _sql(new, "SELECT sql FROM sqlite_master WHERE name = 'jobs'")
        assert "state IN" not in str(table[0])
        # a completed dependency frees its dependent; one failed for good cancels its
        # dependent (with history) and counts as done for the one that runs anyway; a
        # cancelled one cancels its dependent
        _end(new, claimed[1], ok=True)
        _end(new, claimed[2], ok=False)
        new.apply([transitions.cancel_idle("idle", JobState.PENDING, "operator", "no")])
        states = {i: new.get_job(i).state for i in ids}
        assert states == {"ok": JobState.COMPLETED, "bad": JobState.FAILED,
                          "idle": JobState.CANCELLED, "after_ok": JobState.PENDING,
                          "after_bad": JobState.CANCELLED, "run_anyway": JobState.PENDING,
                          "after_idle": JobState.CANCELLED, "done": JobState.COMPLETED}
        reasons = {i: [h.reason for h in new.history(i) if h.action == "cancel"]
                   for i in ("after_bad", "after_idle")}
        assert reasons == {"after_bad": ["dependency bad failed"],
                           "after_idle": ["dependency idle was cancelled"]}
        claimed = new.claim("w", queues=[], job_types=["t"], limit=5, lease_seconds=60)
        assert [j.id for j in claimed] == ["after_ok", "run_anyway"]
        # the unique key is held again once its job is gone, the CHECKs still refuse
        (keyed,) = new.insert_jobs([NewJob(id="again", job_type="u", params={}, unique_key="k")])
        assert keyed.id == "again" and not keyed.existing
        for bad_write in ("UPDATE jobs SET state = 'lost' WHERE id = 'again'",
                          "UPDATE jobs SET state = 'completed' WHERE id = 'again'",
                          "UPDATE jobs SET finished_at = 1 WHERE id = 'again'"):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"), \
                    sqlite3.connect(new.path) as conn:
                conn.execute(bad_write)
    finally:
        new.close()


# -- version 11 ("index_diet"): jobs_type_seq and jobs_queue_seq dropped ----------------------
#: The counts by state of the versions before 12, which had no jobs_waiting to read.
_COUNTS_BEFORE_12 = {
    "count_by_state": "SELECT state, count(*) AS n FROM jobs GROUP BY state",
    "count_by_state_in_queue": "SELECT state, count(*) AS n FROM jobs WHERE queue = ?1 "
                               "GROUP BY state",
    "queue_counts": "SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state",
}


def _lists(store: SQLiteStore) -> dict[str, list[str]]:
    """The ids of the lists and the counts the dashboard reads, by filter."""
    queries = {
        "all": JobQuery(limit=50),
        "type u": JobQuery(job_types=frozenset({"u"}), limit=50),
        "queue q1": JobQuery(queues=frozenset({"q1"}), limit=50),
        "queue q1, type t": JobQuery(queues=frozenset({"q1"}), job_types=frozenset({"t"}),
                                     limit=50),
        "queue q1, pending": JobQuery(queues=frozenset({"q1"}),
                                      states=frozenset({JobState.PENDING}), limit=50),
        "completed": JobQuery(states=frozenset({JobState.COMPLETED}), limit=50),
        "queue q1 before j7": JobQuery(queues=frozenset({"q1"}), before="j7", limit=2),
    }
    found = {name: [job.id for job in store.list_jobs(q)] for name, q in queries.items()}
    found.update({f"count {name}": [str(store.count_jobs(q))] for name, q in queries.items()})
    found["by state"] = [f"{s.value} {n}" for s, n in store.count_by_state().items()]
    found["by state in q1"] = [f"{s.value} {n}" for s, n in store.count_by_state("q1").items()]
    return found


def test_a_version_10_database_migrates_to_11_with_its_lists_and_counts_unchanged(
        db_url: str) -> None:
    ids = [f"j{n}" for n in range(10)]
    with _store_before(db_url, "index_diet", _COUNTS_BEFORE_12) as old:
        old.insert_jobs([NewJob(id=i, job_type="tu"[n % 2], params={"n": n},
                                queue=f"q{n % 3}") for n, i in enumerate(ids)])
        old.insert_jobs([NewJob(id="one", job_type="t", params={}, queue="q1")])  # alone
        for job in old.claim("w", queues=[], job_types=["t", "u"], limit=4, lease_seconds=60):
            _end(old, job, ok=job.id != "j3")
        jobs = {i: old.get_job(i) for i in [*ids, "one"]}
        history = {i: old.history(i) for i in [*ids, "one"]}
        lists = _lists(old)
    new = SQLiteStore(db_url)
    try:
        new.migrate()
        assert new.schema_version() == store_module.LATEST_VERSION
        indexes = {name for (name,) in _sql(new, "SELECT name FROM sqlite_master "
                                                 "WHERE type = 'index' AND tbl_name = 'jobs'")}
        assert not indexes & {"jobs_type_seq", "jobs_queue_seq"}
        assert {"jobs_state_seq", "jobs_queue_state", "jobs_pending_any"} <= indexes
        assert {i: new.get_job(i) for i in [*ids, "one"]} == jobs
        assert {i: new.history(i) for i in [*ids, "one"]} == history
        assert _lists(new) == lists
        assert _sql(new, "PRAGMA integrity_check") == [("ok",)]
        # it keeps working: a lone enqueue (its create row keyed by its own seq), claims
        (later,) = new.insert_jobs([NewJob(id="later", job_type="u", params={}, queue="q1")])
        assert later.id == "later" and not later.existing
        assert _sql(new, "SELECT h.job_seq = j.seq FROM job_history h JOIN jobs j "
                         "ON j.id = h.job_id WHERE h.job_id = 'later'") == [(1,)]
        assert [(h.action, h.to_state) for h in new.history("later")] \
            == [("create", JobState.PENDING)]
        claimed = new.claim("w", queues=["q1"], job_types=["t", "u"], limit=10,
                            lease_seconds=60)
        assert [j.id for j in claimed] == ["j4", "j7", "one", "later"]
        assert new.list_jobs(JobQuery(queues=frozenset({"q1"}), limit=2)) \
            == [new.get_job("later"), new.get_job("one")]
    finally:
        new.close()


def _plan(store: SQLiteStore, query: JobQuery, *, small_backlog: bool = False) -> list[str]:
    """The plan of the list of ``query`` (its arguments inlined: EXPLAIN reads no bindings)."""
    where, args = filter_clause(query, listing=True, small_backlog=small_backlog)
    sql = " AND ".join(where)
    for arg in args:
        sql = sql.replace("?", repr(arg), 1)
    rows = _sql(store, f"EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE {sql} "
                       "ORDER BY seq DESC LIMIT 50")
    return [str(row[-1]) for row in rows]


def test_the_lists_use_the_indexes_left_or_walk_the_table_newest_first(db_url: str) -> None:
    """No index is keyed by (queue, seq) or (job_type, seq) any more, and the ones by (state,
    seq) and (queue, state) hold no pending and no running job: a list of a queue alone must
    not read the queue's every job from an index to sort them (SQLite has no statistics to
    know better), a list of a state other than pending and running reads jobs_state_seq (or
    with a queue jobs_queue_state) in order, and a list of running jobs reads their seqs from
    jobs_lease, never walking the table past every other job."""
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        q1 = frozenset({"q1"})
        assert _plan(store, JobQuery(queues=q1)) == ["SCAN jobs"]
        assert _plan(store, JobQuery(job_types=frozenset({"t"}), queues=q1)) == ["SCAN jobs"]
        for state in (JobState.FAILED, JobState.COMPLETED, JobState.PAUSED):
            assert _plan(store, JobQuery(states=frozenset({state}))) \
                == ["SEARCH jobs USING INDEX jobs_state_seq (state=?)"]
            assert _plan(store, JobQuery(states=frozenset({state}), queues=q1)) \
                == ["SEARCH jobs USING INDEX jobs_queue_state (queue=? AND state=?)"]
        by_lease = ["SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)", "LIST SUBQUERY 1",
                    "SCAN jobs USING INDEX jobs_lease"]
        running = frozenset({JobState.RUNNING})
        assert _plan(store, JobQuery(states=running)) == by_lease
        assert _plan(store, JobQuery(states=running, queues=q1)) == by_lease
        assert _plan(store, JobQuery(states=running | {JobState.FAILED})) == [
            "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)", "LIST SUBQUERY 2",
            "COMPOUND QUERY", "LEFT-MOST SUBQUERY", "SCAN jobs USING INDEX jobs_lease",
            "UNION ALL", "SEARCH jobs USING COVERING INDEX jobs_state_seq (state=?)"]
        assert _plan(store, JobQuery(states=frozenset({JobState.PENDING}))) == ["SCAN jobs"]
        # a queue's pending jobs too: the table newest first, never a queue's whole backlog
        # read from the claim's index at every page of a bulk action
        for states in ({JobState.PENDING}, {JobState.PENDING, JobState.FAILED}):
            assert _plan(store, JobQuery(states=frozenset(states), queues=q1)) == ["SCAN jobs"]
        # ... unless its backlog is short: then its seqs, from the claim's index and
        # jobs_waiting, never a walk past every other job of the table
        pending = frozenset({JobState.PENDING})
        assert _plan(store, JobQuery(states=pending, queues=q1), small_backlog=True) == [
            "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)", "LIST SUBQUERY 2",
            "COMPOUND QUERY", "LEFT-MOST SUBQUERY",
            "SEARCH jobs USING INDEX jobs_pending_queue (queue=?)",
            "UNION ALL", "SEARCH jobs USING INDEX jobs_waiting (queue=?)"]
        probe = backlog_probe(JobQuery(states=pending, queues=q1))
        assert probe is not None
        assert backlog_probe(JobQuery(states=pending)) is None  # no queue: the walk
        assert backlog_probe(JobQuery(states=pending | {JobState.FAILED}, queues=q1)) is None
        # each count reads the index that holds its states
        assert [part for part, _ in count_clauses(JobQuery(queues=q1))] == [
            ["state = 'pending' AND waiting_on = 0", "queue = ?"],
            ["state = 'pending' AND waiting_on > 0", "queue = ?"],
            ["state = 'running'", "queue = ?"],
            ["state <> 'pending' AND state <> 'running'", "queue = ?"]]
        assert [_count_plan(store, where) for where, _ in count_clauses(JobQuery(queues=q1))] \
            == [["SEARCH jobs USING INDEX jobs_pending_queue (queue=?)"],
                ["SEARCH jobs USING INDEX jobs_waiting (queue=?)"],
                ["SCAN jobs USING INDEX jobs_lease"],
                ["SEARCH jobs USING COVERING INDEX jobs_queue_state (queue=?)"]]
    finally:
        store.close()


def _count_plan(store: SQLiteStore, where: list[str]) -> list[str]:
    sql = " AND ".join(where).replace("?", "'q1'")
    return [str(row[-1]) for row in _sql(store, f"EXPLAIN QUERY PLAN SELECT count(*) FROM jobs "
                                                f"WHERE {sql}")]


def test_lists_by_state_find_the_same_jobs_with_the_partial_index(db_url: str) -> None:
    """Each state alone, two states, pending with another: the same jobs, newest first, as a
    filter in Python over all of them."""
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        store.insert_jobs([NewJob(id=f"j{n}", job_type="t", params={}, queue=f"q{n % 2}")
                           for n in range(12)])
        claimed = store.claim("w", queues=[], job_types=["t"], limit=8, lease_seconds=60)
        for job in claimed[:3]:
            _end(store, job, ok=True)
        for job in claimed[3:5]:
            _end(store, job, ok=False)
        store.apply([transitions.cancel_idle("j11", JobState.PENDING, "operator", "no")])
        every = store.list_jobs(JobQuery(limit=100))
        assert len(every) == 12
        for states in ({JobState.PENDING}, {JobState.RUNNING}, {JobState.COMPLETED},
                       {JobState.FAILED}, {JobState.CANCELLED}, {JobState.PAUSED},
                       {JobState.FAILED, JobState.COMPLETED},
                       {JobState.PENDING, JobState.RUNNING}):
            for queues in (frozenset(), frozenset({"q1"})):
                query = JobQuery(states=frozenset(states), queues=queues, limit=100)
                expected = [job.id for job in every if job.state in states
                            and (not queues or job.queue in queues)]
                assert [job.id for job in store.list_jobs(query)] == expected
                assert store.count_jobs(query) == len(expected)
        assert store.count_by_state() == {s: sum(job.state is s for job in every)
                                          for s in JobState}
    finally:
        store.close()


def test_a_lone_enqueue_and_a_batch_write_the_same_create_rows(db_url: str) -> None:
    """A lone job's create row takes its seq from last_insert_rowid(); a batch's are read back
    by seq: both key each row by its own job's seq."""
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        store.insert_jobs([NewJob(id="a", job_type="t", params={})], actor="me")
        store.insert_jobs([NewJob(id="b", job_type="t", params={}),
                           NewJob(id="c", job_type="t", params={})], actor="me")
        store.insert_jobs([NewJob(id="d", job_type="t", params={})], actor="me")
        rows = _sql(store, "SELECT h.job_id, h.job_seq = j.seq, h.action, h.from_state, "
                           "h.to_state, h.attempt, h.actor, h.reason FROM job_history h "
                           "JOIN jobs j ON j.id = h.job_id ORDER BY h.id")
        assert rows == [(i, 1, "create", None, "pending", 0, "me", "") for i in "abcd"]
        assert store.history("a")[0].at == store.get_job("a").created_at
    finally:
        store.close()


# -- version 12 ("fewer_state_entries"): pending and running jobs out of the state indexes ------
_QUEUES = ("q0", "q1", "q2")
#: The state filters asked: none, each state, and mixes of the indexes' states.
_STATE_SETS: list[list[JobState]] = [
    [], *([s] for s in JobState), [JobState.RUNNING, JobState.FAILED],
    [JobState.PENDING, JobState.RUNNING], [JobState.PENDING, JobState.FAILED],
    [JobState.COMPLETED, JobState.CANCELLED, JobState.PAUSED],
    [s for s in JobState if s is not JobState.PENDING]]


def _every_state(store: SQLiteStore) -> None:
    """Jobs in every state over three queues: pending (ready, delayed, waiting on a running
    dependency, on a pending one, on two), running, paused, completed, failed, cancelled. One
    attempt each (no retry left): a failure is for good."""
    store.insert_jobs([NewJob(id=f"s{n:02}", job_type="tu"[n % 2], params={"n": n},
                              queue=_QUEUES[n % 3], max_attempts=0) for n in range(14)])
    store.insert_jobs([NewJob(id="delayed", job_type="t", params={}, queue="q1", delay=3600)])
    claimed = store.claim("w", queues=[], job_types=["t", "u"], limit=9, lease_seconds=60)
    assert [job.id for job in claimed] == [f"s{n:02}" for n in range(9)]
    store.insert_jobs([
        NewJob(id="after_running", job_type="t", params={}, queue="q0", depends_on=("s08",)),
        NewJob(id="after_pending", job_type="u", params={}, queue="q2", depends_on=("s13",)),
        NewJob(id="after_two", job_type="t", params={}, queue="q2",
               depends_on=("s07", "s12"))])
    _end(store, claimed[0], ok=True)
    _end(store, claimed[1], ok=True)
    _end(store, claimed[2], ok=False)
    store.apply([transitions.cancel_idle("s09", JobState.PENDING, "operator", "no")])
    for job in claimed[3:5]:
        assert job.lease_token is not None
        store.apply([transitions.pause_at_checkpoint(
            Lease(job.id, job.lease_token, job.attempt), None, "w")])
    # s05..s08 running; s10..s13, delayed and the three waiting ones pending


def _by_state_and_queue(store: SQLiteStore) -> dict[str, object]:
    """Every count and list by state and queue the store answers, from its indexes."""
    found: dict[str, object] = {"by state": store.count_by_state(),
                                "queues": {q.name: q.counts for q in store.queues()}}
    for queue in (None, *_QUEUES, "none"):
        queues = frozenset() if queue is None else frozenset({queue})
        if queue is not None:
            found[f"by state in {queue}"] = store.count_by_state(queue)
        for states in _STATE_SETS:
            query = JobQuery(states=frozenset(states), queues=queues, limit=100)
            name = f"{queue} {sorted(s.value for s in states)}"
            found[f"list {name}"] = ids = [job.id for job in store.list_jobs(query)]
            found[f"count {name}"] = store.count_jobs(query)
            if ids:  # a page after a cursor, as a bulk action reads them
                page = JobQuery(states=query.states, queues=queues, before=ids[0], limit=2)
                assert [job.id for job in store.list_jobs(page)] == ids[1:3], name
    return found


def _tally(store: SQLiteStore) -> dict[str, object]:
    """What :func:`_by_state_and_queue` must find, counted in Python from every job."""
    every = store.list_jobs(JobQuery(limit=1000))
    found: dict[str, object] = {
        "by state": {s: sum(job.state is s for job in every) for s in JobState},
        "queues": {q: {s.value: n for s in JobState
                       if (n := sum(j.state is s and j.queue == q for j in every))}
                   for q in sorted({job.queue for job in every})}}
    for queue in (None, *_QUEUES, "none"):
        if queue is not None:
            found[f"by state in {queue}"] = {s: sum(j.state is s and j.queue == queue
                                                    for j in every) for s in JobState}
        for states in _STATE_SETS:
            name = f"{queue} {sorted(s.value for s in states)}"
            ids = [j.id for j in every if (not states or j.state in states)
                   and (queue is None or j.queue == queue)]
            found[f"list {name}"] = ids
            found[f"count {name}"] = len(ids)
    return found


def test_a_version_11_database_migrates_to_12_with_its_counts_and_lists_unchanged(
        db_url: str) -> None:
    with _store_before(db_url, "fewer_state_entries", _COUNTS_BEFORE_12) as old:
        _every_state(old)
        before = _by_state_and_queue(old)
        jobs = {job.id: job for job in old.list_jobs(JobQuery(limit=1000))}
        history = {i: old.history(i) for i in jobs}
    assert before == _tally_of(db_url)
    new = SQLiteStore(db_url)
    try:
        new.migrate()
        assert new.schema_version() == store_module.LATEST_VERSION
        assert {job.id: job for job in new.list_jobs(JobQuery(limit=1000))} == jobs
        assert {i: new.history(i) for i in jobs} == history
        assert _by_state_and_queue(new) == before
        assert _sql(new, "PRAGMA integrity_check") == [("ok",)]
        indexes = {str(name): str(sql) for name, sql in _sql(
            new, "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                 "AND tbl_name = 'jobs' AND sql IS NOT NULL")}
        for name in ("jobs_state_seq", "jobs_queue_state"):
            assert indexes[name].endswith("WHERE state <> 'pending' AND state <> 'running'")
        # the waiting jobs are in jobs_waiting, the running ones in jobs_lease only
        assert _sql(new, "SELECT id FROM jobs INDEXED BY jobs_waiting WHERE state = 'pending' "
                         "AND waiting_on > 0 ORDER BY id") \
            == [("after_pending",), ("after_running",), ("after_two",)]
        # it keeps working: a dependency completes (its dependent leaves jobs_waiting for the
        # claim's indexes), running jobs end, pending ones are claimed; the counts follow
        running = {job.id: job for job in new.list_jobs(
            JobQuery(states=frozenset({JobState.RUNNING})))}
        assert sorted(running) == ["s05", "s06", "s07", "s08"]
        _end(new, running["s08"], ok=True)
        _end(new, running["s07"], ok=False)
        assert _by_state_and_queue(new) == _tally(new)
        claimed = new.claim("w", queues=["q0"], job_types=["t", "u"], limit=5, lease_seconds=60)
        assert [job.id for job in claimed] == ["s12", "after_running"]
        assert _by_state_and_queue(new) == _tally(new)
    finally:
        new.close()


def _tally_of(db_url: str) -> dict[str, object]:
    with _store_before(db_url, "fewer_state_entries", _COUNTS_BEFORE_12) as old:
        return _tally(old)


@pytest.mark.parametrize("small_backlog", [SMALL_BACKLOG, 0])
def test_counts_and_lists_by_state_and_queue_match_a_tally_of_every_job(
        db_url: str, small_backlog: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the latest schema, through a life of jobs: every state, jobs waiting on dependencies
    (leaving jobs_waiting when theirs completes, cancelled when it fails), paused ones
    resumed, and the queue depth sample. A queue's pending jobs listed from their seqs (a
    short backlog) and by the walk of the table (no backlog is short below 0)."""
    monkeypatch.setattr(dash_module, "SMALL_BACKLOG", small_backlog)
    store = SQLiteStore(db_url)
    try:
        store.migrate()
        _every_state(store)
        assert _by_state_and_queue(store) == _tally(store)
        running = {job.id: job for job in store.list_jobs(
            JobQuery(states=frozenset({JobState.RUNNING})))}
        _end(store, running["s08"], ok=True)  # after_running may run
        _end(store, running["s07"], ok=False)  # after_two is cancelled
        assert _by_state_and_queue(store) == _tally(store)
        assert store.get_job("after_two").state is JobState.CANCELLED
        assert store.get_job("after_running").waiting_on == 0
        store.record_depth()
        assert _sql(store, "SELECT queue, pending, running FROM queue_depth ORDER BY queue") \
            == [("q0", 2, 1), ("q1", 3, 0), ("q2", 2, 1)]
        claimed = store.claim("w", queues=[], job_types=["t", "u"], limit=20,
                              lease_seconds=60)
        assert len(claimed) == 5  # s10..s13 and after_running; delayed and after_pending wait
        assert _by_state_and_queue(store) == _tally(store)
    finally:
        store.close()
