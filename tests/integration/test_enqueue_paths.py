"""Every way in gives the same job: ``enqueue()`` (one job: its own path in the SQLite store)
and ``enqueue_many()`` (a batch: executemany and one INSERT ... SELECT of the create rows),
with every option given or none, write the same job row and the same history."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import Backoff, Conveyor, EnqueueRequest
from conveyor.context import JobContext
from conveyor.errors import ConfigurationError
from conveyor.stores.base import NewJob

_RUN_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
#: Every option enqueue() takes besides unique keys and dependencies, each unlike its default.
OPTIONS: dict[str, Any] = {
    "queue": "q1", "priority": -7, "run_at": _RUN_AT, "max_attempts": 9, "timeout": 12.5,
    "pause_timeout": 321.0, "backoff": Backoff(base=3.0, factor=4.0, max_delay=500.0,
                                               jitter=0.25),
    "on_dependency_failure": "run",
}
# the store's clocks and a job's own identity differ between any two enqueues
_OWN = ("seq", "id", "created_at", "updated_at")


@pytest.fixture
def app(db_url: str) -> Iterator[Conveyor]:
    app = Conveyor(db_url)

    @app.job("plain")
    def plain(ctx: JobContext, n: int = 0) -> None:
        return None

    @app.job("typed", queue="tq", priority=4, max_attempts=6, timeout=8.0, pause_timeout=90.0,
             backoff=Backoff(base=2.0), max_running=3, limit_key="tenant:{tenant}")
    def typed(ctx: JobContext, tenant: str, n: int = 0) -> None:
        return None

    yield app
    app.close()


def _row(app: Conveyor, job_id: str) -> dict[str, Any]:
    with sqlite3.connect(app.store.path) as conn:  # type: ignore[attr-defined]
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        history = [dict(h) for h in conn.execute(
            "SELECT * FROM job_history WHERE job_id = ? ORDER BY id", (job_id,))]
    for entry in history:
        assert entry.pop("job_seq") == row["seq"] and entry.pop("at") == row["created_at"]
        assert entry.pop("job_id") == job_id
        entry.pop("id")
    row["history"] = history
    if row["run_at"] == row["created_at"]:  # "now": the store's clock at the insert
        row["run_at"] = row["line_at"] = "now"
    return {k: v for k, v in row.items() if k not in _OWN}


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("plain", {}, {}),
    ("plain", {"n": 3}, OPTIONS),
    ("typed", {"tenant": "t7"}, {}),
    ("typed", {"tenant": "t7", "n": 1}, OPTIONS),
]


@pytest.mark.parametrize(("job_type", "params", "options"), CASES,
                         ids=["plain", "plain-options", "typed", "typed-options"])
def test_enqueue_and_enqueue_many_write_the_same_job(app: Conveyor, job_type: str,
                                                     params: dict[str, Any],
                                                     options: dict[str, Any]) -> None:
    one = app.enqueue(job_type, params, actor="someone", **options)
    batch = app.enqueue_many([EnqueueRequest(job_type, params, **options)] * 3,
                             actor="someone")
    rows = [_row(app, job.id) for job in (one, *batch)]
    assert all(row == rows[0] for row in rows[1:])
    row = rows[0]
    assert row["history"] == [{"action": "create", "from_state": None, "to_state": "pending",
                               "attempt": 0, "actor": "someone", "reason": ""}]
    # each option landed in its own column (a swap of two would show here)
    spec = app.job_type(job_type).options
    assert row["queue"] == options.get("queue", spec.queue)
    assert row["priority"] == options.get("priority", spec.priority)
    assert row["max_attempts"] == options.get("max_attempts", spec.max_attempts)
    assert row["timeout"] == options.get("timeout", spec.timeout)
    assert row["pause_timeout"] == options.get("pause_timeout", spec.pause_timeout)
    backoff = options.get("backoff", spec.backoff)
    assert app.get(one.id).backoff == backoff.to_dict()
    assert row["run_at"] == (_RUN_AT.timestamp() if "run_at" in options else "now")
    assert row["limit_key"] == ("tenant:t7" if job_type == "typed" else None)
    # the policy is stored only for a job with dependencies (none here)
    assert row["on_dependency_failure"] == "cancel"
    for job in (one, *batch):  # the returned job is the stored one
        assert job == app.get(job.id)


def test_a_delay_and_a_unique_key_take_their_paths_alike(app: Conveyor) -> None:
    one = app.enqueue("plain", delay=60.0)
    (many,) = app.enqueue_many([EnqueueRequest("plain", delay=60.0)])
    for job in (one, many):
        assert job.run_at - job.created_at == timedelta(seconds=60)
        assert job == app.get(job.id)
    keyed = app.enqueue("plain", unique_key="k1", **OPTIONS)
    (again,) = app.enqueue_many([EnqueueRequest("plain", unique_key="k1")])
    assert again.existing and again.id == keyed.id
    (other,) = app.enqueue_many([EnqueueRequest("plain", unique_key="k2", **OPTIONS)])
    mine, theirs = _row(app, keyed.id), _row(app, other.id)
    assert mine.pop("unique_key") == "k1" and theirs.pop("unique_key") == "k2"
    assert mine == theirs


def test_the_async_client_writes_the_same_job(app: Conveyor) -> None:
    import asyncio

    from conveyor import AsyncConveyor

    async def scenario() -> str:
        async with AsyncConveyor(app) as client:
            job = await client.enqueue("typed", {"tenant": "t7", "n": 1}, actor="someone",
                                       **OPTIONS)
            return job.id

    sync = app.enqueue("typed", {"tenant": "t7", "n": 1}, actor="someone", **OPTIONS)
    assert _row(app, asyncio.run(scenario())) == _row(app, sync.id)


def test_a_batch_of_mixed_options_gives_each_job_its_own(app: Conveyor) -> None:
    """Interleaved sets of options in one batch each land as enqueue() lands them alone (a
    guard for any sharing of checked options between a batch's requests)."""
    requests = [EnqueueRequest("plain", {"n": n}) if n % 3 == 0
                else EnqueueRequest("plain", {"n": n}, **OPTIONS) if n % 3 == 1
                else EnqueueRequest("typed", {"tenant": f"t{n}"}, queue="q2", timeout=5)
                for n in range(9)]
    batch = app.enqueue_many(requests, actor="someone")
    for request, job in zip(requests, batch, strict=True):
        options = {name: getattr(request, name) for name in (*OPTIONS, "timeout")}
        alone = app.enqueue(request.job_type, request.params, actor="someone", **options)
        assert _row(app, job.id) == _row(app, alone.id)
        assert job == app.get(job.id)


def test_options_equal_as_keys_but_not_alike_are_checked_apart(app: Conveyor) -> None:
    """``True == 1 == 1.0`` (so as dict keys), but a bool priority is refused, and a job keeps
    the number type it was given, in a batch as in enqueue()."""
    with pytest.raises(ConfigurationError, match="priority"):
        app.enqueue_many([EnqueueRequest("plain", priority=1),
                          EnqueueRequest("plain", priority=True)])
    with pytest.raises(ConfigurationError, match="max_attempts"):
        app.enqueue_many([EnqueueRequest("plain", max_attempts=2),
                          EnqueueRequest("plain", max_attempts=2.0)])  # type: ignore[arg-type]
    assert app.count_jobs() == 0
    whole, fraction = app.enqueue_many([EnqueueRequest("plain", timeout=5),
                                        EnqueueRequest("plain", timeout=5.0)])
    assert type(whole.timeout) is type(app.enqueue("plain", timeout=5).timeout)
    assert type(fraction.timeout) is float
    assert (whole, fraction) == (app.get(whole.id), app.get(fraction.id))


def test_an_unhashable_option_is_refused_as_enqueue_refuses_it(app: Conveyor) -> None:
    bad = ["q"]
    with pytest.raises(ConfigurationError) as alone:
        app.enqueue("plain", queue=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as batch:
        app.enqueue_many([EnqueueRequest("plain"),
                          EnqueueRequest("plain", queue=bad)])  # type: ignore[arg-type]
    assert str(batch.value) == str(alone.value)
    assert app.count_jobs() == 0


def assert_built_as_alone(app: Conveyor, requests: list[EnqueueRequest],
                          news: list[NewJob]) -> None:
    """Each of enqueue_many's NewJobs equals the one _new_job (enqueue()'s path) builds for
    its request, with the same id and trace."""
    for request, new in zip(requests, news, strict=True):
        alone = app._new_job(request.job_type, request.params, queue=None, priority=None,
                             run_at=None, delay=None, batch_trace=(new.trace,),
                             job_id=new.id)
        assert new == alone


def test_a_request_without_options_is_built_as_new_job_builds_it(app: Conveyor) -> None:
    """enqueue_many's path for a request that gives no option (most of a bulk enqueue) makes
    the NewJob that _new_job (enqueue()'s path, and a request with options) makes, field by
    field; types interleaved, so each job takes its own type's defaults."""
    requests = [EnqueueRequest("plain"), EnqueueRequest("typed", {"tenant": "t1"}),
                EnqueueRequest("typed", {"tenant": "t2", "n": 4}),
                EnqueueRequest("plain", {"n": 2}), EnqueueRequest("plain")]
    news = app._new_jobs(requests)
    assert_built_as_alone(app, requests, news)
    typed = app.job_type("typed")
    defaults = typed.new_job_defaults
    assert (defaults.queue, defaults.priority, defaults.max_attempts, defaults.timeout,
            defaults.pause_timeout) == ("tq", 4, 6, 8.0, 90.0)
    assert defaults.backoff == Backoff(base=2.0).to_dict()
    assert news[1].backoff_json == '{"base":2.0,"factor":2.0,"max_delay":300.0,"jitter":0.5}'
    assert [new.limit_key for new in news] == [None, "tenant:t1", "tenant:t2", None, None]


BAD_PLAIN = [
    (EnqueueRequest("nope"), "nope"),
    (EnqueueRequest("plain", ["n"]), "JSON object"),  # type: ignore[arg-type]
    (EnqueueRequest("plain", {"n": float("nan")}), "nan"),
    (EnqueueRequest("plain", {"n": "a\x00b"}), "NUL"),
    (EnqueueRequest("plain", {"m": 1}), "do not fit"),
    (EnqueueRequest("typed", {"n": 1}), "tenant"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_PLAIN,
                         ids=["unknown-type", "not-an-object", "nan", "nul", "unfit",
                              "no-limit-key"])
def test_a_bad_request_without_options_fails_its_batch_as_enqueue_fails(
        app: Conveyor, bad: EnqueueRequest, message: str) -> None:
    """A request without options is checked as enqueue() checks it: the same error, raised
    before anything is written, wherever it stands in the batch."""
    with pytest.raises(Exception) as alone:
        app.enqueue(bad.job_type, bad.params)
    assert message in str(alone.value)
    for position in range(3):
        requests = [EnqueueRequest("plain", {"n": n}) for n in range(2)]
        requests.insert(position, bad)
        with pytest.raises(type(alone.value)) as batch:
            app.enqueue_many(requests)
        assert str(batch.value) == str(alone.value)
    assert app.count_jobs() == 0


def test_requests_without_params_take_their_types_checked_answer(app: Conveyor) -> None:
    """A run of requests without params of one type is checked in full at its first request
    and built as _new_job builds each; a type whose function needs a param refuses every one
    of them, as enqueue() does, wherever it stands after a request that fitted."""
    requests = [EnqueueRequest("plain"), EnqueueRequest("plain"),
                EnqueueRequest("plain", None),  # type: ignore[arg-type]
                EnqueueRequest("plain", {"n": 1}), EnqueueRequest("plain"),
                EnqueueRequest("typed", {"tenant": "t"}), EnqueueRequest("plain")]
    news = app._new_jobs(requests)
    assert_built_as_alone(app, requests, news)
    assert news[0].params is requests[0].params  # as _new_job keeps it
    with pytest.raises(Exception) as alone_error:
        app.enqueue("typed")
    for before in ([], [EnqueueRequest("typed", {"tenant": "t"})]):
        with pytest.raises(type(alone_error.value)) as batch:
            app.enqueue_many([*before, EnqueueRequest("typed"), EnqueueRequest("typed")])
        assert str(batch.value) == str(alone_error.value)
    assert app.count_jobs() == 0
