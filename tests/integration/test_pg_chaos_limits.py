"""More worker processes than the server's ``max_connections`` can hold.

A private server is reshaped to ``max_connections = 8`` (its owner's ``ALTER SYSTEM`` and a
restart: the shared server of ``make test`` is left alone), the test keeps two connections for
itself, and six worker processes that would each like up to three (a pool of two plus the
LISTEN connection) are started. The server refuses the surplus with "sorry, too many clients
already". Some workers get connections and run the jobs; the others must log that clear error
and back off and retry -- never hang, never crash: stopped with SIGTERM while the others still
hold every connection, each exits cleanly (status 0) within a bound. All jobs complete.

Like every PostgreSQL test this needs ``CONVEYOR_TEST_PG_URL`` (it fails without it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import EnqueueRequest, JobState
from tests.conftest import pg_test_url
from tests.integration.pgprocs.harness import (
    Fleet,
    PrivateServer,
    admin,
    private_server,
    wait_until,
)
from tests.integration.pgprocs.jobs import WORK, build_app, read_completions

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MAX_CONNECTIONS = 8
WORKERS = [f"m{i}" for i in range(6)]
JOBS = 200
#: Seconds a worker may take to exit after SIGTERM: the pool's wait for a connection (3 s
#: here) plus the shutdown, with room for a loaded machine.
EXIT_BOUND = 20.0
REFUSED = "too many clients"


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    pg_test_url()
    with private_server() as started:
        started.configure(max_connections=MAX_CONNECTIONS)
        started.restart("fast")
        yield started


def test_workers_beyond_max_connections_back_off_and_the_rest_finish_the_jobs(
        server: PrivateServer, tmp_path: Path) -> None:
    schema = f"limits_{uuid.uuid4().hex[:12]}"
    completions = tmp_path / "completions.log"
    fleet = Fleet(server.url, schema, tmp_path,
                  {"concurrency": 2, "lease": 5.0, "heartbeat": 1.0, "reap": 1.0, "poll": 0.5,
                   "progress": 0.1, "shutdown_grace": 3.0, "min_size": 1, "max_size": 2,
                   "pool_timeout": 3.0, "completions": completions})
    conn = admin(server.url)  # the test's own two connections, taken before the workers come
    app = build_app(server.url, schema=schema, min_size=1, max_size=1)
    peak = 0

    def connections() -> int:
        nonlocal peak
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE backend_type = 'client backend'").fetchone()
        peak = max(peak, int(row[0]) if row else 0)
        return peak

    def refusals(name: str) -> int:
        return sum(REFUSED in line for line in fleet.procs[name].lines())

    def working() -> set[str]:
        running = app.list(state=JobState.RUNNING, limit=100)
        names = {(j.worker_id or "").split(":")[0] for j in running}
        return names | {c.worker_id.split(":")[0] for c in read_completions(completions)}

    try:
        assert conn.execute("SHOW max_connections").fetchone() == (str(MAX_CONNECTIONS),)
        app.store.migrate()
        app.enqueue_many([EnqueueRequest(WORK, {"steps": 10, "step_ms": 20.0})
                          for _ in range(JOBS)])
        for name in WORKERS:
            fleet.start(name)

        # The workers that got connections run jobs; the others are refused, again and again.
        def settled() -> bool:
            connections()
            busy = working()
            return bool(busy) and all(name in busy or refusals(name) >= 2 for name in WORKERS)

        wait_until(settled, 60, "every worker to run jobs or be refused twice", interval=0.2)
        starved = sorted(set(WORKERS) - working())
        assert starved, "every worker got connections: the limit was not reached"
        assert app.counts()[JobState.COMPLETED] < JOBS, "the jobs ran out too soon"

        # A starved worker, stopped while the others still hold every connection, exits
        # cleanly and in time: it is backing off, not hanging.
        for name in starved:
            assert fleet.procs[name].alive(), fleet.report()
        starved_exits = fleet.terminate(starved, timeout=EXIT_BOUND + 10)

        wait_until(lambda: connections() >= 0 and app.counts()[JobState.COMPLETED] == JOBS,
                   120, "the jobs to complete on the workers that connected", interval=0.2)
        exits = {**starved_exits, **fleet.terminate_all(timeout=EXIT_BOUND + 10)}
        assert peak <= MAX_CONNECTIONS
        slow = {name: s for name, (_, s) in exits.items() if s > EXIT_BOUND}
        assert not slow, (slow, fleet.report())
        unclean = {name: code for name, (code, _) in exits.items() if code != 0}
        assert not unclean, (unclean, fleet.report())
        assert app.counts()[JobState.COMPLETED] == JOBS
        print(f"max_connections {MAX_CONNECTIONS}: peak {peak} client connections; starved "
              f"{starved} (refused {[refusals(n) for n in starved]} times); exits after "
              f"SIGTERM: { {n: (c, round(s, 1)) for n, (c, s) in sorted(exits.items())} }")
    finally:
        fleet.close()
        app.close()
        conn.close()
        with contextlib.suppress(Exception), admin(server.url) as other:
            other.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
