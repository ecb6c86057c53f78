"""The JSON API, endpoint by endpoint: what it answers, and every error a client can cause."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import drain
from conveyor.web.api import CONTROL_ACTIONS

from .web_helpers import (
    BEARER,
    AsgiClient,
    Stepper,
    fail_without_retry,
    make_web,
    register_types,
    running_worker,
    wait_until,
    web_client,
)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return make_app()


@pytest.fixture
def stepper(app: Conveyor) -> Stepper:
    return register_types(app)


@pytest.fixture
def client(app: Conveyor, stepper: Stepper) -> Iterator[AsgiClient]:
    with web_client(app) as c:
        yield c


def enqueue(client: AsgiClient, job_type: str = "test.add", **body: object) -> dict[str, Any]:
    body.setdefault("params", {"a": 1, "b": 2} if job_type == "test.add" else {})
    response = client.post("/api/jobs", json={"job_type": job_type, **body}, headers=BEARER)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def error_of(response: object) -> str:
    return response.json()["message"]  # type: ignore[attr-defined,no-any-return]


# -- enqueue -----------------------------------------------------------------------------------
def test_enqueue_returns_the_pending_job_and_its_location(client: AsgiClient) -> None:
    response = client.post("/api/jobs", headers=BEARER, json={
        "job_type": "test.add", "params": {"a": 2}, "queue": "q1", "priority": 5,
        "max_attempts": 4, "timeout": 30, "pause_timeout": 60, "delay": 0})
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    assert (job["state"], job["queue"], job["priority"], job["max_attempts"]) == \
        ("pending", "q1", 5, 4)
    assert job["params"] == {"a": 2}
    assert job["legal_actions"] == ["cancel"]
    assert job["timeout"] == 30


def test_enqueue_with_run_at(client: AsgiClient) -> None:
    job = enqueue(client, run_at="2030-01-02T03:04:05Z")
    assert job["run_at"].startswith("2030-01-02T03:04:05")


def test_unknown_job_type_is_422_naming_the_type(client: AsgiClient) -> None:
    response = client.post("/api/jobs", json={"job_type": "no.such"}, headers=BEARER)
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_job_type"
    assert "'no.such'" in error_of(response)
    assert "test.add" in error_of(response)  # and says what is registered


@pytest.mark.parametrize(("body", "expected"), [
    ({"job_type": "test.add", "params": {"c": 1}}, "params do not fit test.add"),
    ({"job_type": "test.add", "params": {"a": 1}, "queue": ""}, "queue must be"),
    ({"job_type": "test.add", "params": {"a": 1}, "delay": 1, "run_at": "2030-01-01T00:00:00Z"},
     "run_at or delay"),
    ({"job_type": "test.add", "params": {"a": 1}, "run_at": "2030-01-01T00:00:00"},
     "timezone-aware"),
    ({"job_type": "test.add", "params": {"a": 1}, "run_at": "soon"}, "'run_at' must be"),
    ({"job_type": "test.add", "params": [1]}, "'params' must be an object, not an array"),
    ({"job_type": 3}, "'job_type' must be a string"),
    ({"job_type": "test.add", "priority": True}, "'priority' must be an integer"),
    ({"job_type": "test.add", "priority": 1.5}, "'priority' must be an integer, not a number"),
    ({"job_type": "test.add", "priority": 2.0**40}, "'priority' must be between"),
    ({"job_type": "test.add", "priority": 2**40}, "'priority' must be between"),
    ({"job_type": "test.add", "max_attempts": -1}, "'max_attempts' must be between"),
    ({"job_type": "test.add", "delay": 1e12}, "'delay' must be between"),
    ({"job_type": "test.add", "timeout": 0}, "'timeout' must be greater than 0"),
    ({"job_type": "test.add", "colour": "red"}, "unknown field(s) 'colour'"),
    ({"params": {}}, "'job_type' is required"),
    ({"job_type": "test.add", "params": {"a": 1e30}}, "outside the 64-bit range"),
    ({"job_type": "test.add", "params": {"a": 2**70}}, "outside the 64-bit range"),
    ({"job_type": "test.add", "params": {"a": "x\u0000y"}}, "NUL characters"),
])
def test_bad_enqueue_bodies_are_422_saying_what_was_wrong(
        client: AsgiClient, body: dict[str, object], expected: str) -> None:
    response = client.post("/api/jobs", json=body, headers=BEARER)
    assert response.status_code == 422, response.text
    assert expected in error_of(response)
    assert client.get("/api/counts", headers=BEARER).json()["total"] == 0  # nothing written


@pytest.mark.parametrize(("content", "expected"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, not an array"),
    (b'{"job_type": "test.add", "params": {"a": NaN}}', "NaN is not valid JSON"),
    (b"", "send a JSON object"),
    (b"\x0b", "not valid JSON"),  # whitespace to Python's strip(), not to JSON
    (b" \x0c\n", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"job_type": "test.add", "params": {"a": "\\ud800"}}', "lone surrogate"),
])
def test_malformed_json_is_422(client: AsgiClient, content: bytes, expected: str) -> None:
    headers = {**BEARER, "content-type": "application/json"}
    response = client.post("/api/jobs", content=content, headers=headers)
    assert response.status_code == 422
    assert expected in error_of(response)


def test_a_body_that_is_not_json_is_415(client: AsgiClient) -> None:
    response = client.post("/api/jobs", content=b"job_type=test.add",
                           headers={**BEARER, "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert "application/json" in error_of(response)


def test_oversized_bodies_are_413(client: AsgiClient) -> None:
    big = b'{"job_type": "test.add", "params": {"a": "' + b"x" * (3 * 1024 * 1024) + b'"}}'
    response = client.post("/api/jobs", content=big,
                           headers={**BEARER, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_oversized_chunked_bodies_are_413(client: AsgiClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"job_type": "test.add", "params": {"a": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    response = client.post("/api/jobs", content=chunks(),
                           headers={**BEARER, "content-type": "application/json"})
    assert response.status_code == 413


def test_params_over_the_payload_limit_are_413(client: AsgiClient) -> None:
    body = {"job_type": "test.add", "params": {"a": "x" * (1024 * 1024 + 10)}}
    response = client.post("/api/jobs", json=body, headers=BEARER)
    assert response.status_code == 413
    assert "limit" in error_of(response)


# -- reading -----------------------------------------------------------------------------------
def test_get_a_job_and_404_for_an_unknown_id(client: AsgiClient) -> None:
    job = enqueue(client)
    got = client.get(f"/api/jobs/{job['id']}", headers=BEARER)
    assert got.status_code == 200
    assert got.json() == {**job, "held": None, "upstream": [], "downstream": []}
    missing = client.get("/api/jobs/nope", headers=BEARER)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "No job with id 'nope'"}


def test_list_filters_and_pages(client: AsgiClient) -> None:
    ids = [enqueue(client)["id"] for _ in range(5)]
    other = enqueue(client, "test.stepper", queue="slow")
    page = client.get("/api/jobs?limit=2&job_type=test.add", headers=BEARER).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    assert page["next_before"] == ids[3]
    rest = client.get(f"/api/jobs?limit=4&job_type=test.add&before={page['next_before']}",
                      headers=BEARER).json()
    assert [j["id"] for j in rest["jobs"]] == ids[::-1][2:]
    assert rest["next_before"] is None
    by_queue = client.get("/api/jobs?queue=slow", headers=BEARER).json()["jobs"]
    assert [j["id"] for j in by_queue] == [other["id"]]
    client.post(f"/api/jobs/{ids[0]}/cancel", headers=BEARER)
    states = client.get("/api/jobs?state=cancelled&state=running", headers=BEARER).json()
    assert [j["id"] for j in states["jobs"]] == [ids[0]]


@pytest.mark.parametrize(("query", "expected"), [
    ("limit=0", "limit must be an integer from 1 to 200"),
    ("limit=201", "limit must be an integer from 1 to 200"),
    ("limit=ten", "limit must be an integer from 1 to 200"),
    ("state=sleeping", "unknown state 'sleeping'"),
])
def test_bad_list_queries_are_422(client: AsgiClient, query: str, expected: str) -> None:
    response = client.get(f"/api/jobs?{query}", headers=BEARER)
    assert response.status_code == 422
    assert expected in error_of(response)


def test_counts_per_state(app: Conveyor, client: AsgiClient) -> None:
    enqueue(client)
    job = enqueue(client, queue="other")
    client.post(f"/api/jobs/{job['id']}/cancel", headers=BEARER)
    body = client.get("/api/counts", headers=BEARER).json()
    assert body == {"counts": {"pending": 1, "running": 0, "paused": 0, "completed": 0,
                               "failed": 0, "cancelled": 1}, "total": 2}
    assert client.get("/api/counts?queue=other", headers=BEARER).json()["total"] == 1


def test_job_types(client: AsgiClient) -> None:
    types = client.get("/api/job-types", headers=BEARER).json()["job_types"]
    add = next(t for t in types if t["name"] == "test.add")
    assert add["signature"] == "(a: int, b: int = 0)"
    assert [t["name"] for t in types] == ["test.add", "test.fail", "test.stepper"]


def test_history_oldest_first_and_404(app: Conveyor, client: AsgiClient) -> None:
    job = enqueue(client)
    client.post(f"/api/jobs/{job['id']}/cancel", json={"reason": "not needed"}, headers=BEARER)
    history = client.get(f"/api/jobs/{job['id']}/history", headers=BEARER).json()["history"]
    assert [(h["action"], h["from_state"], h["to_state"]) for h in history] == [
        ("create", None, "pending"), ("cancel", "pending", "cancelled")]
    assert history[1]["reason"] == "not needed"
    assert history[1]["actor"] == "http-api"
    assert client.get("/api/jobs/nope/history", headers=BEARER).status_code == 404


# -- control -----------------------------------------------------------------------------------
def test_illegal_transitions_are_409_with_the_reason(client: AsgiClient) -> None:
    job = enqueue(client)
    response = client.post(f"/api/jobs/{job['id']}/pause", headers=BEARER)
    assert response.status_code == 409
    assert response.json() == {"error": "invalid_state",
                               "message": "Cannot transition from pending to paused"}
    assert client.post(f"/api/jobs/{job['id']}/resume", headers=BEARER).status_code == 409
    assert client.post(f"/api/jobs/{job['id']}/retry", headers=BEARER).status_code == 409
    requeue = client.post(f"/api/jobs/{job['id']}/requeue", headers=BEARER)
    assert requeue.status_code == 409
    assert "Cannot requeue" in error_of(requeue)


@pytest.mark.parametrize("action", CONTROL_ACTIONS)
def test_every_action_on_an_unknown_job_is_404(client: AsgiClient, action: str) -> None:
    response = client.post(f"/api/jobs/missing/{action}", headers=BEARER)
    assert response.status_code == 404


@pytest.mark.parametrize(("action", "body", "expected"), [
    ("cancel", {"reason": 5}, "'reason' must be a string"),
    ("cancel", {"reason": "x" * 1001}, "limited to 1000"),
    ("pause", {"why": "x"}, "unknown field(s) 'why'"),
    ("requeue", {"keep_checkpoint": "yes"}, "'keep_checkpoint' must be a boolean"),
])
def test_bad_action_bodies_are_422(client: AsgiClient, action: str, body: dict[str, object],
                                   expected: str) -> None:
    job = enqueue(client)
    response = client.post(f"/api/jobs/{job['id']}/{action}", json=body, headers=BEARER)
    assert response.status_code == 422
    assert expected in error_of(response)


def test_cancel_retry_and_requeue(app: Conveyor, client: AsgiClient) -> None:
    job = enqueue(client)
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel", headers=BEARER).json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["legal_actions"] == ["requeue"]
    copy = client.post(f"/api/jobs/{job['id']}/requeue", json={"keep_checkpoint": True},
                       headers=BEARER)
    assert copy.status_code == 201
    assert copy.json()["requeued_from"] == job["id"]
    assert copy.headers["location"] == f"/api/jobs/{copy.json()['id']}"

    exhausted = client.post("/api/jobs", json={"job_type": "test.fail", "max_attempts": 1},
                            headers=BEARER).json()
    drain(app)  # fails, is retried automatically once, fails again: no retry left
    failed = client.get(f"/api/jobs/{exhausted['id']}", headers=BEARER).json()
    assert (failed["state"], failed["attempt"], failed["is_terminal"]) == ("failed", 1, True)
    assert failed["error"]["type"] == "RuntimeError"
    assert "boom" in failed["error"]["traceback"]
    assert failed["legal_actions"] == ["requeue"]
    refused = client.post(f"/api/jobs/{exhausted['id']}/retry", headers=BEARER)
    assert refused.status_code == 409
    assert "attempts exhausted" in error_of(refused)

    retryable = enqueue(client, "test.fail", max_attempts=2)
    fail_without_retry(app, retryable["id"])
    failed = client.get(f"/api/jobs/{retryable['id']}", headers=BEARER).json()
    assert failed["legal_actions"] == ["retry"]
    retried = client.post(f"/api/jobs/{retryable['id']}/retry", headers=BEARER).json()
    assert (retried["state"], retried["attempt"], retried["error"]) == ("pending", 1, None)


def test_pause_and_resume_a_running_job(app: Conveyor, client: AsgiClient,
                                        stepper: Stepper) -> None:
    job = enqueue(client, "test.stepper", params={"steps": 3})
    url = f"/api/jobs/{job['id']}"
    with running_worker(app):
        _wait_state(client, url, "running")
        asked = client.post(f"{url}/pause", json={"reason": "lunch"}, headers=BEARER).json()
        assert asked["state"] == "running"
        assert asked["pause_requested"]
        assert "pause" not in asked["legal_actions"]
        _wait_state(client, url, "paused")
        resumed = client.post(f"{url}/resume", headers=BEARER).json()
        assert resumed["resume_requested"]
        stepper.step(3)
        done = _wait_state(client, url, "completed")
    assert done["result"] == {"done": 3}
    assert done["progress"]["percent"] == 100


def _wait_state(client: AsgiClient, url: str, state: str) -> dict[str, Any]:
    job: dict[str, Any] = wait_until(
        lambda: (j := client.get(url, headers=BEARER).json())["state"] == state and j,
        message=f"state {state}")
    return job


# -- failures that are not the client's ---------------------------------------------------------
def test_an_unavailable_store_is_503(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'missing-folder' / 'jobs.db'}")
    register_types(app)
    client = AsgiClient(make_web(app))
    try:
        response = client.get("/api/jobs", headers=BEARER)
        assert response.status_code == 503
        assert response.json()["error"] == "store_unavailable"
        assert response.headers["retry-after"] == "5"
        page = client.get("/", headers=BEARER)
        assert page.status_code == 503
        assert "Store unavailable" in page.text
    finally:
        client.close()


def test_unknown_paths_and_methods(client: AsgiClient) -> None:
    assert client.get("/api/nothing", headers=BEARER).json()["error"] == "not_found"
    response = client.request("DELETE", "/api/jobs", headers=BEARER)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_every_legal_action_has_an_endpoint(app: Conveyor, client: AsgiClient) -> None:
    """The buttons come from Job.legal_actions; each must have somewhere to go."""
    from conveyor import Job

    for state in JobState:
        for flags in ({}, {"pause_requested": True}, {"resume_requested": True}):
            for attempt in (0, 5):
                job = Job(id="x", state=state, attempt=attempt, max_attempts=3,
                          **flags)  # type: ignore[arg-type]
                assert set(job.legal_actions) <= set(CONTROL_ACTIONS)


def test_dependencies_over_http_and_on_the_job_page(app: Conveyor, client: AsgiClient) -> None:
    up = enqueue(client)
    down = enqueue(client, depends_on=[up["id"]], on_dependency_failure="run")
    assert (down["waiting_on"], down["on_dependency_failure"]) == (1, "run")
    view = client.get(f"/api/jobs/{up['id']}", headers=BEARER).json()
    assert (view["upstream"], view["downstream"]) == (
        [], [{"id": down["id"], "job_type": "test.add", "state": "pending"}])
    page = client.get(f"/jobs/{down['id']}", headers=BEARER).text
    assert f'href="/jobs/{up["id"]}"' in page and "1 dependency job(s)" in page
    assert f'href="/jobs/{down["id"]}"' in client.get(f"/jobs/{up['id']}", headers=BEARER).text
    unknown = client.post("/api/jobs", headers=BEARER, json={
        "job_type": "test.add", "params": {"a": 1},
        "depends_on": ["00000000-0000-4000-8000-000000000000"]})
    assert unknown.status_code == 404 and "names no stored job" in error_of(unknown)
    bad = client.post("/api/jobs", headers=BEARER,
                      json={"job_type": "test.add", "params": {"a": 1}, "depends_on": "x"})
    assert bad.status_code == 422 and "'depends_on' must be an array" in error_of(bad)
    assert len(app.list()) == 2


@pytest.mark.parametrize("content", [b"\x0b", b"\t\x0c"])
def test_an_optional_body_of_non_json_whitespace_is_422(client: AsgiClient,
                                                         content: bytes) -> None:
    """A queue's pause takes an optional body: a body of only JSON whitespace is none, but
    characters JSON does not count as whitespace are refused, and nothing changes."""
    headers = {**BEARER, "content-type": "application/json"}
    response = client.post("/api/queues/mail/pause", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert "not valid JSON" in error_of(response)
    assert client.post("/api/queues/mail/pause", content=b" \n", headers=headers).json()[
        "paused"] is True
