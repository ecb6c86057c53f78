"""The HTTP API of flow control: unique keys on enqueue, queues, and waiting-job edits."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conveyor import Conveyor

from .web_helpers import BEARER, READ_TOKEN, TOKEN, AsgiClient, typed_app, web_client


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    with web_client(app) as c:
        yield c


def test_a_held_unique_key_answers_200_with_the_holder_or_409(client: AsgiClient) -> None:
    body = {"job_type": "test.add", "params": {"a": 1, "b": 2}, "unique_key": "sum:1"}
    first = client.post("/api/jobs", json=body, headers=BEARER)
    again = client.post("/api/jobs", json=body, headers=BEARER)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["existing"] is True
    raised = client.post("/api/jobs", json={**body, "on_conflict": "raise"}, headers=BEARER)
    assert raised.status_code == 409 and raised.json()["error"] == "duplicate_job"
    assert first.json()["id"] in raised.json()["message"]
    bad = client.post("/api/jobs", json={**body, "unique_key": "a\nb"}, headers=BEARER)
    assert bad.status_code == 422


def test_queues_pause_and_resume_with_actor_and_reason(client: AsgiClient) -> None:
    paused = client.post("/api/queues/mail/pause", json={"reason": "smtp down"},
                         headers=BEARER)
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["actor"], paused.json()["reason"]) == (
        True, "http-api", "smtp down")
    listed = client.get("/api/queues", headers=BEARER).json()["queues"]
    assert [(q["name"], q["paused"]) for q in listed] == [("mail", True)]
    resumed = client.post("/api/queues/mail/resume", headers=BEARER)
    assert resumed.json()["paused"] is False
    assert client.post("/api/queues/mail/pause", json={"why": 1},
                       headers=BEARER).status_code == 422


def test_run_now_and_reschedule_a_pending_job_then_409_when_not_pending(
        client: AsgiClient) -> None:
    job = client.post("/api/jobs", json={"job_type": "test.add", "params": {"a": 1, "b": 2},
                                         "delay": 3600}, headers=BEARER).json()
    moved = client.post(f"/api/jobs/{job['id']}/reschedule", json={"priority": 7},
                        headers=BEARER)
    assert moved.status_code == 200 and moved.json()["priority"] == 7
    now = client.post(f"/api/jobs/{job['id']}/run_now", headers=BEARER)
    assert now.status_code == 200 and now.json()["run_at"] < job["run_at"]
    assert client.post(f"/api/jobs/{job['id']}/reschedule", json={},
                       headers=BEARER).status_code == 422
    client.post(f"/api/jobs/{job['id']}/cancel", headers=BEARER)
    refused = client.post(f"/api/jobs/{job['id']}/run_now", headers=BEARER)
    assert refused.status_code == 409 and "not pending" in refused.json()["message"]


def test_the_flow_page_lists_queues_and_schedules_escaped_and_run_now_shows(
        app: Conveyor, client: AsgiClient) -> None:
    nasty = '<img src=x onerror=alert("q")>'
    assert client.post(f"/api/queues/{nasty}/pause", json={"reason": nasty},
                       headers=BEARER).status_code == 200
    app.periodic("*/5 * * * *", "test.add", params={"a": 1, "b": 2}, name="sums")
    assert client.get("/login?token=" + TOKEN).status_code == 303
    flow = client.get("/flow")
    assert flow.status_code == 200
    assert nasty not in flow.text and "&lt;img src=x" in flow.text
    assert 'data-queue-action="resume"' in flow.text
    assert "sums" in flow.text and "*/5 * * * *" in flow.text
    waiting = client.post("/api/jobs", json={"job_type": "test.add", "delay": 3600,
                                             "params": {"a": 1, "b": 2}}, headers=BEARER)
    page = client.get(f"/jobs/{waiting.json()['id']}")
    assert 'data-edit-action="run_now"' in page.text
    client.post(f"/api/jobs/{waiting.json()['id']}/run_now", headers=BEARER)
    assert 'data-edit-action="run_now"' not in client.get(
        f"/jobs/{waiting.json()['id']}").text


def test_a_queue_limit_is_set_listed_and_shown_on_a_held_job(app: Conveyor,
                                                             client: AsgiClient) -> None:
    jobs = [client.post("/api/jobs", json={"job_type": "test.add", "queue": "mail",
                                           "params": {"a": n}}, headers=BEARER).json()
            for n in range(2)]
    for bad in ({"rate_limit": "5/d"}, {"max_running": 0}, {"max_running": "2"}):
        assert client.post("/api/queues/mail/limit", json=bad,
                           headers=BEARER).status_code == 422
    assert client.get("/api/limits", headers=BEARER).json() == {"limits": []}
    limited = client.post("/api/queues/mail/limit", json={"max_running": 1, "rate_limit":
                                                          "100/m", "reason": "quota"},
                          headers=BEARER)
    assert limited.status_code == 200, limited.text
    assert {k: limited.json()[k] for k in ("max_running", "rate_limit", "limit_actor",
                                           "limit_reason")} == {
        "max_running": 1, "rate_limit": "100/m", "limit_actor": "http-api",
        "limit_reason": "quota"}
    (rule,) = client.get("/api/limits", headers=BEARER).json()["limits"]
    assert (rule["scope"], rule["name"], rule["max_running"]) == ("queue", "mail", 1)
    (claimed,) = app.store.claim("w", queues=[], job_types=["test.add"], limit=5,
                                 lease_seconds=60)
    other = next(j for j in jobs if j["id"] != claimed.id)
    held = client.get(f"/api/jobs/{other['id']}", headers=BEARER).json()
    assert (held["state"], held["held"]) == ("pending", "held: 1/1 running for queue:mail")
    assert client.get(f"/api/jobs/{claimed.id}", headers=BEARER).json()["held"] is None
    assert client.get("/login?token=" + TOKEN).status_code == 303
    flow = client.get("/flow").text
    assert "1 running, 100/m (set by http-api)" in flow
    assert 'data-queue="mail"><input name="max_running"' in flow and 'value="100/m"' in flow
    assert "held: 1/1 running for queue:mail" in client.get(f"/jobs/{other['id']}").text
    assert client.get("/login?token=" + READ_TOKEN).status_code == 303
    assert "limit-form" not in client.get("/flow").text  # a read-only session: no form
    removed = client.post("/api/queues/mail/limit", json={}, headers=BEARER)
    assert removed.json()["max_running"] is None
    assert client.get(f"/api/jobs/{other['id']}", headers=BEARER).json()["held"] is None
