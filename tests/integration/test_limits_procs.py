"""Limits across processes: four worker processes of four slots each, one database.

Sixteen slots race for jobs of a type limited to two running at once, and of a type limited
to one per tenant; every job records when it ran, and at no moment do more run than the
limit allows (a job's recorded run lies inside the time the database counts it running, so
this is the database's count or less). On SQLite and on PostgreSQL, where the claims of the
four processes really are concurrent transactions.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, EnqueueRequest, JobState
from tests.conftest import pg_test_url
from tests.integration import subprocs
from tests.integration.procs.limited import build_app

PROCS, SLOTS = 4, 4


@contextlib.contextmanager
def _url(store: str, folder: Path) -> Iterator[str]:
    if store == "sqlite":
        yield f"sqlite:///{folder / 'jobs.db'}"
        return
    schema = f"limits_{uuid.uuid4().hex[:12]}"
    base = pg_test_url()
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _most_at_once(runs: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_four_worker_processes_never_run_more_than_the_limits(store: str,
                                                              tmp_path: Path) -> None:
    record = tmp_path / "runs.log"
    with _url(store, tmp_path) as url:
        app: Conveyor = build_app(url, str(record))
        try:
            app.enqueue_many([EnqueueRequest("lim.two", {"n": n}) for n in range(40)]
                             + [EnqueueRequest("lim.tenant", {"tenant_id": 7 + n % 2, "n": n})
                                for n in range(12)])
            procs = [subprocs.spawn(subprocs.Proc, f"w{i}", f"w{i}", tmp_path, [
                "-m", "tests.integration.procs.limited", "--url", url, "--name", f"w{i}",
                "--log", str(record), "--concurrency", str(SLOTS)]) for i in range(PROCS)]
            try:
                codes = [proc.wait_exit(120) for proc in procs]
            finally:
                for proc in procs:
                    proc.kill()
            assert codes == [0] * PROCS, subprocs.report(procs, 20)
            assert app.counts()[JobState.COMPLETED] == 52
        finally:
            app.close()
    runs = [line.split() for line in record.read_text().splitlines()]
    assert len(runs) == 52
    by: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for job_type, key, start, end in runs:
        by.setdefault((job_type, key), []).append((float(start), float(end)))
    assert _most_at_once(by[("lim.two", "-")]) == 2  # reached, never passed
    assert _most_at_once(by[("lim.tenant", "tenant:7")]) == 1
    assert _most_at_once(by[("lim.tenant", "tenant:8")]) == 1
    tenants = by[("lim.tenant", "tenant:7")] + by[("lim.tenant", "tenant:8")]
    assert _most_at_once(tenants) == 2  # the two tenants ran side by side
