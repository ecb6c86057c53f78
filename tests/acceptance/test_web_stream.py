"""The event stream, over a real uvicorn server: live progress, counts, and changes made
by other processes (which this process hears of only by polling the store)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, EnqueueRequest, JobState
from conveyor.web.stream import Watcher, fingerprint

from .web_helpers import (
    BEARER,
    READ_BEARER,
    EventReader,
    ServerThread,
    Stepper,
    register_types,
    running_worker,
    serving,
    wait_until,
)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    app = make_app()
    # Create the schema now: two apps opening a fresh SQLite file at the same moment can
    # collide (reported to the store's owner), and one test opens a second app on the file.
    app.store  # noqa: B018
    return app


@pytest.fixture
def stepper(app: Conveyor) -> Stepper:
    return register_types(app)


@pytest.fixture
def server(app: Conveyor, stepper: Stepper) -> Iterator[ServerThread]:
    with serving(app, poll_interval=0.2) as running:
        yield running


@pytest.fixture
def events(server: ServerThread) -> Iterator[EventReader]:
    reader = EventReader(f"{server.url}/api/events", headers=READ_BEARER)
    yield reader
    reader.close()


def job_event(job_id: str, **expected: Any) -> Callable[[str, Any], bool]:
    def match(name: str, data: Any) -> bool:
        return name == "job" and data["id"] == job_id and all(
            data.get(k) == v for k, v in expected.items())
    return match


def test_the_stream_needs_a_token(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/api/events")
    assert response.status_code == 401
    reader = EventReader(f"{server.url}/api/events",
                         headers={"Authorization": "Bearer wrong-wrong-wrong-wrong"})
    try:
        assert reader.response.status_code == 401
    finally:
        reader.close()


def test_stream_sends_counts_new_jobs_and_live_progress(
        app: Conveyor, server: ServerThread, events: EventReader, stepper: Stepper) -> None:
    assert events.response.headers["content-type"].startswith("text/event-stream")
    _, counts = events.next(lambda n, d: n == "counts")
    assert counts["total"] == 0
    job = httpx.post(f"{server.url}/api/jobs", headers=BEARER,
                     json={"job_type": "test.stepper", "params": {"steps": 4}}).json()
    _, created = events.next(job_event(job["id"], state="pending"))
    assert "params" not in created
    assert "result" not in created
    with running_worker(app):
        events.next(job_event(job["id"], state="running"))
        seen: list[dict[str, Any]] = []
        for _ in range(4):
            stepper.step()
            _, data = events.next(lambda n, d: n == "job" and d["id"] == job["id"]
                                  and d["progress"]["current_step"] > len(seen))
            seen.append(data)
        if seen[-1]["state"] != "completed":
            events.next(job_event(job["id"], state="completed"))
        wait_until(lambda: any(n == "counts" and d["counts"]["completed"] == 1
                               for n, d in events.seen), message="counts with the completion")
    percents = [d["progress"]["percent"] for d in seen]
    assert percents == [25, 50, 75, 100]  # each step arrived live, in order


def test_changes_from_another_process_arrive_by_polling(
        app: Conveyor, db_url: str, events: EventReader) -> None:
    other = Conveyor(db_url)  # another process, as far as this server's events can tell
    register_types(other)
    try:
        job = other.enqueue("test.add", {"a": 1})
        events.next(job_event(job.id, state="pending"))
        other.cancel(job.id)
        _, data = events.next(job_event(job.id, state="cancelled"))
        assert data["legal_actions"] == ["requeue"]
    finally:
        other.close()


def test_each_change_is_sent_once(app: Conveyor, server: ServerThread,
                                  events: EventReader) -> None:
    job = app.enqueue("test.add", {"a": 1})
    app.cancel(job.id)
    got = [d for n, d in events.drain(1.5) if n == "job" and d["id"] == job.id]
    assert [d["state"] for d in got] in (["pending", "cancelled"], ["cancelled"])


def test_watcher_forgets_finished_jobs_out_of_view(app: Conveyor) -> None:
    register_types(app)
    watcher = Watcher(app)
    first = app.enqueue("test.add", {"a": 1})
    watcher.poll()
    assert first.id in watcher.sent
    app.cancel(first.id)
    for _ in range(60):
        app.enqueue("test.add", {"a": 2})
    messages = watcher.poll()
    cancelled = [d for n, d in messages if n == "job" and d["id"] == first.id]
    assert [d["state"] for d in cancelled] == ["cancelled"]  # its last change is still sent
    assert first.id not in watcher.sent  # and then it is forgotten
    assert watcher.poll() == []  # nothing changed: nothing sent
    state = fingerprint(app.get(first.id))[0]
    assert isinstance(state, JobState)
    assert state.value == "cancelled"


def test_pinned_jobs_are_watched_even_when_old(app: Conveyor) -> None:
    register_types(app)
    old = app.enqueue("test.add", {"a": 1})
    app.cancel(old.id)
    for _ in range(60):
        app.enqueue("test.add", {"a": 2})
    watcher = Watcher(app, [old.id, "no-such-job"])
    sent = {d["id"] for n, d in watcher.poll() if n == "job"}
    assert old.id in sent


def test_an_unavailable_store_is_reported_on_the_stream(tmp_path: Path) -> None:
    broken = Conveyor(f"sqlite:///{tmp_path / 'no-such-folder' / 'jobs.db'}")
    register_types(broken)
    with serving(broken, poll_interval=0.1) as server:
        reader = EventReader(f"{server.url}/api/events", headers=READ_BEARER)
        try:
            name, data = reader.next()
            assert name == "problem"
            assert data["error"] == "store_unavailable"
        finally:
            reader.close()


def test_a_pinned_job_beyond_the_200_newest_unfinished_is_followed(app: Conveyor) -> None:
    register_types(app)
    old = app.enqueue("test.add", {"a": 1})
    app.enqueue_many([EnqueueRequest("test.add", {"a": 2})] * 210)
    unpinned, pinned = Watcher(app), Watcher(app, [old.id])
    assert old.id not in {d["id"] for n, d in unpinned.poll() if n == "job"}
    pinned.poll()
    app.cancel(old.id)
    sent = [d for n, d in pinned.poll() if n == "job" and d["id"] == old.id]
    assert [d["state"] for d in sent] == ["cancelled"]
    assert len(Watcher(app, [str(i) for i in range(300)]).pinned) == 200  # a full page fits


def test_another_process_commit_wakes_the_sqlite_stream_without_polling(
        app: Conveyor, db_url: str) -> None:
    register_types(app)
    # the stream's own poll would come only after 60 s: an event sooner came from the watch
    with serving(app, poll_interval=60) as server:
        reader = EventReader(f"{server.url}/api/events", headers=READ_BEARER)
        other = Conveyor(db_url)  # its own connection: a commit this server did not make
        register_types(other)
        try:
            reader.next(lambda n, d: n == "counts")
            started = time.monotonic()
            job = other.enqueue("test.add", {"a": 1})
            reader.next(job_event(job.id, state="pending"), timeout=20)
            assert time.monotonic() - started < 5
        finally:
            other.close()
            reader.close()
