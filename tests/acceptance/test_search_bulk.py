"""Search and bulk actions through the HTTP API (on both stores) and the command line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.conftest import app_on

from .cli_helpers import run_cli
from .web_helpers import BEARER, READ_BEARER, AsgiClient, register_types, web_client


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conveyor]:
    with app_on(request.param, tmp_path, "search") as made:
        register_types(made)
        yield made


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    with web_client(app) as c:
        yield c


def found(client: AsgiClient, query: str) -> set[str]:
    response = client.get(f"/api/jobs?{query}", headers=READ_BEARER)
    assert response.status_code == 200, response.text
    count = client.get(f"/api/jobs/count?{query}", headers=READ_BEARER).json()["count"]
    jobs = {job["id"] for job in response.json()["jobs"]}
    assert count == len(jobs)
    return jobs


def test_the_api_filters_by_text_id_queue_and_time(app: Conveyor, client: AsgiClient) -> None:
    report = app.enqueue("test.add", {"a": 1, "b": 987654}, queue="reports", delay=600)
    other = app.enqueue("test.add", {"a": 2}, delay=600)
    assert found(client, "text=987654") == {report.id}
    assert found(client, f"id_prefix={report.id[-6:].upper()}") == {report.id}
    assert found(client, "queue=reports&state=pending") == {report.id}
    assert found(client, "created_after=1h") == {report.id, other.id}
    assert found(client, "created_before=2000-01-01T00:00:00Z") == set()
    assert found(client, "finished_after=1h&text=&id_prefix=") == set()


def test_a_bulk_cancel_previews_the_count_then_cancels(app: Conveyor,
                                                       client: AsgiClient) -> None:
    targets = [app.enqueue("test.add", {"a": n}, delay=600) for n in range(3)]
    spared = app.enqueue("test.add", {"a": 9}, queue="other", delay=600)
    body: dict[str, object] = {"filter": {"state": "pending", "queue": ["default"]},
                               "reason": "cleanup"}
    preview = client.post("/api/jobs/bulk/cancel", headers=BEARER,
                          json={**body, "dry_run": True}).json()
    assert (preview["matched"], preview["changed"], preview["dry_run"]) == (3, 0, True)
    assert app.count_jobs(state="pending") == 4  # a dry run changes nothing
    done = client.post("/api/jobs/bulk/cancel", headers=BEARER, json=body).json()
    assert (done["matched"], done["changed"], done["skipped"]) == (3, 3, 0)
    for job in targets:
        last = app.history(job.id)[-1]
        assert (app.get(job.id).state, last.actor, last.reason) == (
            JobState.CANCELLED, "http-api", "cleanup")
    assert app.get(spared.id).state is JobState.PENDING
    again = client.post("/api/jobs/bulk/requeue", headers=BEARER,
                        json={"filter": {"state": "cancelled"}}).json()
    assert again["changed"] == 3 and app.count_jobs(state="pending", queue="default") == 3


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_bad_filters_and_bulk_requests_are_refused_and_change_nothing(
        app: Conveyor, client: AsgiClient) -> None:
    app.enqueue("test.add", {"a": 1}, delay=600)
    for query in ("created_after=yesterday", "id_prefix=xyz", "finished_before=3000-01-01",
                  "text=%00"):
        response = client.get(f"/api/jobs?{query}", headers=READ_BEARER)
        assert response.status_code == 422, (query, response.text)
    bodies: list[dict[str, object]] = [
        {}, {"filter": {}}, {"filter": {"state": ""}}, {"filter": {"colour": "red"}},
        {"filter": {"state": "pending"}, "keep_checkpoint": True},
        {"filter": {"created_after": "soon"}}]
    for body in bodies:
        response = client.post("/api/jobs/bulk/cancel", headers=BEARER, json=body)
        assert response.status_code == 422, (body, response.text)
    response = client.post("/api/jobs/bulk/cancel", headers=READ_BEARER,
                           json={"filter": {"state": "pending"}})
    assert response.status_code == 403
    assert app.count_jobs(state="pending") == 1


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_the_cli_asks_with_the_count_before_a_bulk_cancel(app: Conveyor) -> None:
    jobs = [app.enqueue("test.add", {"a": n}, delay=600) for n in range(2)]
    store = ["--store", app.url]
    declined = run_cli(*store, "cancel", "--state", "pending", "--type", "test.add",
                       input="n\n")
    assert declined.exit_code == 1
    assert "cancel 2 job(s) matching state pending; job type test.add?" in declined.output
    assert app.count_jobs(state="pending") == 2
    listed = run_cli(*store, "ls", "--search", '"a":1', "--since", "1h", "--json")
    assert listed.exit_code == 0 and jobs[1].id in listed.output and jobs[0].id not in listed.output
    done = run_cli(*store, "cancel", "--state", "pending", "--yes", "-r", "done")
    assert done.exit_code == 0, done.output
    assert "2 changed" in done.output
    assert app.count_jobs(state="cancelled") == 2
    assert run_cli(*store, "cancel").exit_code == 2  # neither ids nor a filter
    assert run_cli(*store, "retry", jobs[0].id, "--state", "failed").exit_code == 2
    assert run_cli(*store, "ls", "--finished-after", "someday").exit_code == 2
