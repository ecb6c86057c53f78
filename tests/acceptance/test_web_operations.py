"""Operations over HTTP: the probes without a token (and nothing else), the workers list, a
stop request from the dashboard's API, the Workers page, and pruning."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import drain
from tests.conftest import FakeClock

from .web_helpers import (
    BEARER,
    READ_BEARER,
    AsgiClient,
    logged_in,
    make_web,
    register_types,
    typed_app,
    wait_until,
    web_client,
)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    with web_client(app) as c:
        yield c


def test_probes_answer_without_a_token_and_nothing_else_does(client: AsgiClient) -> None:
    for headers in ({}, BEARER, {"Authorization": "Bearer wrong"}):
        assert client.get("/healthz", headers=headers).json() == {"status": "ok"}
        ready = client.get("/readyz", headers=headers)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    for path in ("/api/workers", "/api/openapi.json", "/api/counts"):
        assert client.get(path).status_code == 401
    assert client.post("/api/prune", json={"dry_run": True}).status_code == 401


def test_readyz_is_503_on_an_unreachable_store_and_says_nothing_of_it(
        make_app: Callable[..., Conveyor]) -> None:
    down = make_app("postgresql://ops:hunter2secret@127.0.0.1:1/jobs")
    c = AsgiClient(make_web(down))
    try:
        assert c.get("/healthz").status_code == 200  # the process is up
        ready = c.get("/readyz")
    finally:
        c.close()
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reason": "store unavailable"}
    assert "hunter2secret" not in ready.text and "127.0.0.1" not in ready.text


def test_a_worker_listed_stopped_from_the_api_and_shown_on_its_page(
        app: Conveyor, client: AsgiClient) -> None:
    worker = app.worker(concurrency=2, lease_seconds=2, heartbeat_interval=0.1,
                        poll_interval=0.05, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        found = wait_until(lambda: client.get("/api/workers", headers=BEARER).json()["workers"])
        assert [(w["id"], w["status"], w["concurrency"]) for w in found] == [
            (worker.worker_id, "running", 2)]
        with logged_in(app) as browser:
            shown = browser.get("/workers")
            assert shown.status_code == 200
            assert worker.worker_id in shown.text and 'data-post="/api/workers/' in shown.text
        path = f"/api/workers/{worker.worker_id}/stop"
        assert client.post(path, headers=READ_BEARER).status_code == 403
        asked = client.post(path, headers=BEARER)
        assert (asked.status_code, asked.json()["status"]) == (200, "stopping")
        thread.join(timeout=15)
        assert not thread.is_alive()  # it stopped on its own, on its next heartbeat
    finally:
        worker.stop()
        thread.join(timeout=15)
    (after,) = client.get("/api/workers", headers=BEARER).json()["workers"]
    assert after["status"] == "stopped"
    again = client.post(f"/api/workers/{worker.worker_id}/stop", headers=BEARER)
    assert (again.status_code, again.json()["error"]) == (404, "not_found")


def test_prune_over_http_counts_then_deletes(make_app: Callable[..., Conveyor],
                                            tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    app = make_app(f"sqlite:///{tmp_path / 'prune.db'}", clock=clock)
    register_types(app)
    for i in range(3):
        app.enqueue("test.add", {"a": i, "b": 1})
    drain(app)
    clock.advance(8 * 86400)
    c = AsgiClient(make_web(app))
    try:
        dry = c.post("/api/prune", json={"dry_run": True}, headers=BEARER).json()
        assert dry == {"dry_run": True, "total": 3,
                       "by_state": {"completed": 3, "failed": 0, "cancelled": 0}}
        assert c.post("/api/prune", json={"older_than": 60}, headers=BEARER).status_code == 422
        assert c.post("/api/prune", json={"states": ["running"]},
                      headers=BEARER).status_code == 422
        done = c.post("/api/prune", json={"states": ["completed"], "older_than": 86400},
                      headers=BEARER).json()
        assert done == {"dry_run": False, "total": 3, "by_state": {"completed": 3}}
    finally:
        c.close()
    assert app.counts()[JobState.COMPLETED] == 0
