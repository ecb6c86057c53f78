"""A worker cut off from PostgreSQL by a real half-open partition, next to a healthy one.

The server and the cut-off worker sit in network namespaces of their own, joined by a veth
pair (see :mod:`tests.integration.netpartition`); the healthy worker runs in the host's
namespace and reaches the server through its Unix socket. Mid-run every packet between the
cut-off worker and the server is dropped (no RST, no ICMP), while a session in the cut-off
namespace holds a row lock on one of its jobs inside an open transaction, as the cut-off
worker's own transaction would if the cut came between its statements.

The healthy worker must not be touched by any of it: its jobs keep their leases (heartbeats
never wait on the lock, and never queue behind reaping), it runs new jobs, and its reaper
passes the locked job and takes the cut-off worker's other job over within the lease plus
the time a half-open call takes to fail; the locked one once its lock is gone. The cut-off
worker's calls fail within the connection bound (tcp_user_timeout, then the pool timeout) and
it warns that its leases went unrenewed.
After healing: every job completed exactly once (or twice only where a run was lost), no
write by the cut-off worker landed on a job it had lost, and both workers are still running.

Slow (about a minute) and needs root, ``ip`` and ``nft``: it fails, not skips, without them.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor import Conveyor, JobState
from conveyor.stores.postgres.config import parse_url
from tests.conftest import pg_test_url
from tests.integration.netpartition import Partition, missing_tools, partition
from tests.integration.pgprocs.harness import WorkerProc, wait_until
from tests.integration.pgprocs.jobs import WORK, build_app, read_completions
from tests.integration.subprocs import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
LEASE = 20.0
#: The workers' pool timeout: how long a store call waits for a fresh connection once the one
#: it had failed (the store's default is 15 s).
POOL_TIMEOUT = 3.0
#: How long a call on a half-open connection may take to fail: the store's tcp_user_timeout
#: (10 s by default, measured 10.5 s), then one try on a fresh connection, which waits up to
#: the pool timeout; all of it within the lease.
CALL_BOUND = LEASE
TIMINGS = ["--lease", str(LEASE), "--heartbeat", "1.0", "--reap", "0.5", "--poll", "0.5",
           "--progress", "0.2", "--pool-timeout", str(POOL_TIMEOUT)]
LONG = {"steps": 500, "step_ms": 40.0}
SHORT = {"steps": 20, "step_ms": 5.0}


@pytest.fixture
def net() -> Iterator[Partition]:
    pg_test_url()
    why = missing_tools()
    if why:
        pytest.fail(f"the partition test cannot run: {why}")
    with partition() as made:
        yield made


class Procs:
    """The processes of one test, all killed at its end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.all: list[subprocess.Popen[bytes]] = []

    def worker(self, name: str, url: str, schema: str, concurrency: int,
               prefix: list[str]) -> WorkerProc:
        args = [sys.executable, "-m", "tests.integration.pgprocs.worker", "--url", url,
                "--schema", schema, "--name", name, "--concurrency", str(concurrency),
                "--completions", str(self.folder / "completions"), *TIMINGS]
        stderr = self.folder / f"{name}.err"
        with stderr.open("wb") as err:
            popen = subprocess.Popen([*prefix, *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=err)
        self.all.append(popen)
        return WorkerProc(name, popen, stderr)

    def lock_holder(self, net: Partition, schema: str, job_id: str) -> subprocess.Popen[str]:
        """A session in the cut-off namespace that locks ``job_id``'s row in a transaction
        and then just waits. It has the store's connection settings except a longer idle-in-
        transaction bound (the lease + 10 s), so it holds the lock past the lease: reapers
        must get past it, and the server ends it at that bound (without any bound it would
        hold the lock for hours: the server's keepalives are the only thing left)."""
        bound = int((LEASE + 10) * 1000)
        joined = (f"{net.remote_url}?options=-c%20idle_in_transaction_session_timeout%3D"
                  f"{bound}")
        conninfo = parse_url(joined, schema).conninfo
        code = ("import psycopg, sys, time\n"
                f"c = psycopg.connect({conninfo!r})\n"
                f"c.execute('SELECT id FROM jobs WHERE id = %s FOR UPDATE', ({job_id!r},))\n"
                "print('locked', flush=True)\n"
                "time.sleep(3600)\n")
        popen = subprocess.Popen(net.in_worker_ns([sys.executable, "-c", code]), cwd=ROOT,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        self.all.append(popen)  # type: ignore[arg-type]
        assert popen.stdout is not None
        assert popen.stdout.readline().strip() == "locked"
        return popen

    def close(self) -> None:
        for popen in self.all:
            if popen.poll() is None:
                popen.kill()
                popen.wait(10)
            if popen.stdout is not None:
                popen.stdout.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    made = Procs(tmp_path)
    yield made
    made.close()


def _running_on(app: Conveyor, prefix: str) -> list[str]:
    return [job.id for job in app.list(state=JobState.RUNNING, limit=100)
            if (job.worker_id or "").startswith(prefix)]


def _lost_at(app: Conveyor, job_id: str) -> tuple[dt.datetime, int] | None:
    for entry in app.history(job_id):
        if entry.action == "fail" and entry.reason == "worker lost":
            return entry.at, entry.attempt
    return None


def _first_error_after(proc: WorkerProc, since: float, about: str) -> float | None:
    """Seconds from ``since`` (wall clock) to the first ERROR line about ``about``."""
    for line in proc.lines():
        found = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ERROR ", line)
        if found and about in line:
            stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            at = stamp + int(found.group(2)) / 1000
            if at >= since:
                return at - since
    return None


def test_a_half_open_worker_does_not_freeze_the_healthy_one(net: Partition,
                                                             procs: Procs) -> None:
    schema = f"part_{uuid.uuid4().hex[:8]}"
    app = build_app(net.local_url, schema=schema)
    app.store.migrate()
    cut = procs.worker("cut", net.remote_url, schema, 2, net.in_worker_ns([]))
    cut_jobs = [app.enqueue(WORK, LONG).id for _ in range(2)]
    wait_until(lambda: len(_running_on(app, "cut:")) == 2, 60, "the cut-off worker's jobs")
    healthy = procs.worker("ok", net.local_url, schema, 4, [])
    ok_jobs = [app.enqueue(WORK, LONG).id for _ in range(2)]
    wait_until(lambda: sorted(_running_on(app, "ok:")) == sorted(ok_jobs), 60,
               "the healthy worker's jobs")

    procs.lock_holder(net, schema, cut_jobs[0])
    net.cut()
    cut_wall = time.time()
    cut_mono = time.monotonic()
    short_jobs = [app.enqueue(WORK, SHORT).id for _ in range(10)]

    # During the cut: the healthy worker's leases never run out, it runs the new jobs, and
    # its reaper takes over the cut-off worker's job that is not locked (the locked one must
    # wait for its lock, but must not hold anything else up).
    reaped: dict[str, float] = {}
    deadline = cut_mono + LEASE + 30

    def short_done() -> bool:
        return all(j.state is JobState.COMPLETED for j in app.store.get_jobs(short_jobs))

    while cut_jobs[1] not in reaped or not short_done():
        assert time.monotonic() < deadline, (
            f"during the cut: reaped {reaped}, short jobs done: {short_done()}\n"
            + "\n".join(healthy.lines()[-20:]))
        now = app.store.now()
        for job in app.store.get_jobs(ok_jobs):
            if job.state is JobState.RUNNING:
                assert job.lease_expires_at is not None and job.lease_expires_at > now, (
                    f"the healthy worker's job {job.id} let its lease run out")
        for job_id in cut_jobs:
            if job_id not in reaped and _lost_at(app, job_id) is not None:
                reaped[job_id] = time.monotonic() - cut_mono
        time.sleep(0.25)
    call_failed = _first_error_after(cut, cut_wall, " monitor: ")
    time.sleep(2)  # a little longer cut: the healthy worker runs on
    assert cut_jobs[0] not in reaped, "the locked job was reaped through its lock"
    net.heal()
    # The server ends the locking session at its idle-in-transaction bound, and the lock goes:
    # the job is reaped, or its worker, still holding its lease token, records the run's end.

    def moved_on() -> bool:
        job = app.get(cut_jobs[0])
        return job.attempt > 0 or job.state is JobState.COMPLETED

    try:
        wait_until(moved_on, LEASE + 30, "the formerly locked job moving on")
    except AssertionError:
        with psycopg.connect(net.local_url, autocommit=True) as conn:
            activity = conn.execute(
                "SELECT pid, application_name, state, wait_event_type, left(query, 60), "
                "client_addr FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchall()
        raise AssertionError(f"{app.get(cut_jobs[0])}\n{app.history(cut_jobs[0])}\n"
                             f"{activity}\n" + "\n".join(cut.lines()[-10:]) + "\n"
                             + "\n".join(healthy.lines()[-10:])) from None

    everything = cut_jobs + ok_jobs + short_jobs
    wait_until(lambda: all(j.state is JobState.COMPLETED for j in app.store.get_jobs(everything)),
               120, "every job completing after the heal")
    time.sleep(2 * LEASE / 15 + 1)  # let any late write of the cut-off worker try to land

    report = (f"\nreaped after {reaped} s; the cut-off worker's first failed call after "
              f"{call_failed} s\n--- cut:\n" + "\n".join(cut.lines()[-30:]) +
              "\n--- ok:\n" + "\n".join(healthy.lines()[-30:]))
    print(report)
    assert cut.alive() and healthy.alive(), report
    assert not healthy.tracebacks() and not cut.tracebacks(), report
    assert reaped[cut_jobs[1]] < LEASE + CALL_BOUND, report
    assert call_failed is not None and call_failed < CALL_BOUND, report
    assert any("not renewed" in line for line in cut.lines()), report

    completions = read_completions(Path(procs.folder / "completions"))
    for job in app.store.get_jobs(everything):
        history = app.history(job.id)
        assert [h.action for h in history].count("complete") == 1, history
        lost = _lost_at(app, job.id)
        runs = [c for c in completions if c.job_id == job.id]
        if job.id in ok_jobs:
            assert lost is None and job.attempt == 0, history  # never lost its lease
        if lost is None:
            assert len(runs) == 1, (job.id, runs)
        else:
            lost_at, attempt = lost
            late = [h for h in history if h.at > lost_at and h.attempt == attempt
                    and h.actor.startswith("cut:")]
            assert not late, f"stale write by the cut-off worker: {late}"
        assert job.progress.last_checkpoint == {"i": job.params["steps"]}, job
    app.close()


def test_the_partition_tooling_cleans_up_after_itself() -> None:
    why = missing_tools()
    if why:
        pytest.fail(f"the partition test cannot run: {why}")
    with partition() as made:
        names = (made.server_ns, made.worker_ns)
        with psycopg.connect(made.local_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert not any(name in listed for name in names)
