"""The live event stream (Server-Sent Events) behind the dashboard's progress bars.

Subscriber events are in-process only, and the workers usually run in other processes, so the
stream reads the store: the recent and the unfinished jobs, the jobs the page pinned (every job
its table shows) and the counts, and sends what changed since its last look. On SQLite it reads
soon after another process commits, woken by the commit watch the workers wait on
(:meth:`Store.watch_changes`), and otherwise every few seconds as a safety net; on PostgreSQL
it polls twice a second. Events this process emits (a control call
made through this server, a worker running in it) wake the loop at once; it then re-reads just
those jobs from the store, so what it sends is always the stored truth, never an event's
possibly older snapshot. Every job is sent only when its fingerprint (state, progress, requests,
attempt) changed, which is what de-duplicates the two sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from conveyor.app import Conveyor
from conveyor.errors import StoreError
from conveyor.events import JobEvent
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.web.common import call, known_query
from conveyor.web.middleware import error_body

#: How many of the newest jobs each poll reads (new jobs show up through these).
RECENT = 50
#: How many unfinished jobs each poll reads (their progress is what moves).
ACTIVE = 200
#: Most job ids a client may pin with ``?job_id=`` (a job page pins its own; the dashboard
#: the jobs of its table, up to the largest page).
MAX_PINNED = 200
#: Seconds between safety polls when the store tells of other processes' commits (SQLite).
WATCHED_POLL = 5.0
#: The counts are read at most once per this many times what the last count took.
COUNT_SPACING = 10
#: Longest wait before the stream notices the server is stopping.
STOP_CHECK = 0.25
#: Fewest seconds between two reads of the store woken by other processes' commits.
MIN_GAP = 0.05
_UNFINISHED = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)

Fingerprint = tuple[object, ...]
Message = tuple[str, dict[str, Any]]


def job_summary(job: Job) -> dict[str, Any]:
    """A job as the stream sends it: everything but the bulky params, result and traceback."""
    data = job.to_dict()
    del data["params"], data["result"]
    data["progress"] = {k: v for k, v in data["progress"].items() if k != "last_checkpoint"}
    if job.error is not None:
        data["error"] = {"type": job.error.type, "message": job.error.message}
    data["pending_requests"] = job.pending_requests  # what the page shows as "... requested"
    return data


def fingerprint(job: Job) -> Fingerprint:
    """What a watcher of the job can see change; lease renewals alone change nothing here."""
    return (job.state, job.progress.current_step, job.progress.total_steps, job.attempt,
            job.pause_requested, job.cancel_requested, job.resume_requested,
            job.error is not None, job.worker_id, job.finished_at)


class Watcher:
    """One client's view of the store: what it was last sent. Runs in a worker thread."""

    def __init__(self, app: Conveyor, pinned: Iterable[str] = ()) -> None:
        self.app = app
        self.pinned = list(dict.fromkeys(pinned))[:MAX_PINNED]
        self.sent: dict[str, Fingerprint] = {}
        self.counts: dict[str, int] | None = None
        self._counted_at = float("-inf")
        self._count_cost = 0.0

    def poll(self) -> list[Message]:
        """Everything that changed since the last call (everything, on the first)."""
        recent = self.app.list(limit=RECENT)
        jobs = {job.id: job for job in recent}
        jobs.update((job.id, job) for job in self.app.list(_UNFINISHED, limit=ACTIVE))
        missing = [job_id for job_id in [*self.sent, *self.pinned] if job_id not in jobs]
        if missing:
            jobs.update((job.id, job) for job in self.app.store.get_jobs(missing))
        messages = self._counts() + self._changed(jobs.values())
        # Forget finished jobs once they drop out of view, so memory stays bounded.
        in_view = {job.id for job in recent} | set(self.pinned)
        self.sent = {job_id: mark for job_id, mark in self.sent.items()
                     if job_id in jobs and (job_id in in_view or not jobs[job_id].is_terminal)}
        return messages

    def refresh(self, job_ids: Iterable[str]) -> list[Message]:
        """Re-read the jobs an in-process event named, and the counts."""
        jobs = self.app.store.get_jobs(sorted(set(job_ids)))
        return self._counts() + self._changed(jobs)

    def _counts(self) -> list[Message]:
        """The counts, when they changed. Counting reads an index entry per job, so with
        millions of jobs it is read at most once per :data:`COUNT_SPACING` times its own cost
        (a count of 0.3 s: every 3 s), whatever the rate of changes."""
        now = time.monotonic()
        if now < self._counted_at + COUNT_SPACING * self._count_cost:
            return []
        found = self.app.counts()
        self._counted_at = time.monotonic()
        self._count_cost = self._counted_at - now
        counts = {state.value: n for state, n in found.items()}
        counts = {state.value: counts.get(state.value, 0) for state in JobState}
        if counts == self.counts:
            return []
        self.counts = counts
        return [("counts", {"counts": counts, "total": sum(counts.values())})]

    def _changed(self, jobs: Iterable[Job]) -> list[Message]:
        messages: list[Message] = []
        for job in sorted(jobs, key=lambda j: j.created_at):
            mark = fingerprint(job)
            if self.sent.get(job.id) != mark:
                self.sent[job.id] = mark
                messages.append(("job", job_summary(job)))
        return messages


def format_event(name: str, data: dict[str, Any]) -> str:
    """One SSE message; compact JSON never contains a newline, so one ``data:`` line holds it."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventStream:
    """``GET /api/events``: an endless ``text/event-stream`` of job and count changes."""

    def __init__(self, app: Conveyor, *, poll_interval: float = 0.5, keepalive: float = 15.0,
                 stopping: threading.Event | None = None) -> None:
        self.app = app
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        # Set when the server shuts down: streams end by themselves instead of holding the
        # shutdown up until the server's grace period runs out.
        self.stopping = stopping or threading.Event()

    def routes(self) -> list[Route]:
        return [Route("/api/events", self.stream, methods=["GET"], name="api_events")]

    async def stream(self, request: Request) -> Response:
        watcher = Watcher(self.app, known_query(request, "job_id").getlist("job_id"))
        return StreamingResponse(self.events(watcher), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def events(self, watcher: Watcher) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        named: set[str] = set()
        timer = _Timer(loop.time)

        def mark(job_id: str) -> None:
            named.add(job_id)
            wake.set()

        def on_event(event: JobEvent) -> None:  # called in whatever thread made the change
            # RuntimeError: the loop is closing, so this stream is over anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(mark, event.job.id)

        def on_commit() -> None:  # the store's watch thread: another process committed
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(timer.poke, wake)

        unsubscribe = self.app.subscribe(on_event)
        unwatch = await call(self._watch, on_commit)
        # With a watch, polling is only a safety net; without one, it is how changes arrive.
        interval = self.poll_interval if unwatch is None else max(self.poll_interval,
                                                                   WATCHED_POLL)
        try:
            yield "retry: 2000\n\n"
            last_sent = loop.time()
            while not self.stopping.is_set():
                try:
                    if loop.time() >= timer.next_poll:
                        named.clear()
                        timer.polled(interval)
                        messages = await call(watcher.poll)
                    else:
                        ids = set(named)
                        named.clear()
                        messages = await call(watcher.refresh, ids)
                except StoreError as exc:  # tell the page, and try again a little later
                    # Not "error": EventSource reserves that name for its connection errors.
                    messages = [("problem", error_body("store_unavailable", str(exc)))]
                    timer.next_poll = loop.time() + 4 * self.poll_interval
                if messages:
                    yield "".join(format_event(name, data) for name, data in messages)
                    last_sent = loop.time()
                elif loop.time() - last_sent >= self.keepalive:
                    yield ": keepalive\n\n"
                    last_sent = loop.time()
                wake.clear()
                # in slices, so that a shutdown (stopping) ends the stream within one
                while (not named and not wake.is_set() and not self.stopping.is_set()
                       and loop.time() < timer.next_poll):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(),
                                               min(STOP_CHECK, timer.next_poll - loop.time()))
                await asyncio.sleep(0.02)  # let a burst of events collect into one refresh
        finally:
            unsubscribe()
            if unwatch is not None:
                unwatch()


    def _watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """The store's commit watch, or None (no watch, or no store yet: the poll reports
        that on the stream)."""
        try:
            return self.app.store.watch_changes(wake)
        except StoreError:
            return None


class _Timer:
    """When the stream reads the store next: on its interval, or soon after another process
    committed (at most every :data:`MIN_GAP` seconds, so a busy worker's stream of commits
    costs a few reads a second, not one per commit)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.next_poll = 0.0
        self.last_poll = float("-inf")

    def polled(self, interval: float) -> None:
        self.last_poll = self.clock()
        self.next_poll = self.last_poll + interval

    def poke(self, wake: asyncio.Event) -> None:
        self.next_poll = min(self.next_poll, max(self.clock(), self.last_poll + MIN_GAP))
        wake.set()
