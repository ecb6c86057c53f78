"""What the dashboard shows, and bad input answered with 4xx (issue 8: items 3, 13, 22).

- Job text with controls or bidi overrides is shown escaped, in the HTML and in live rows.
- A finished job shows no pending request, and the worker that ran it.
- Bad cursors, unknown query parameters and oversized login forms are 4xx, never 200 or 500.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from conveyor import ConfigurationError, Conveyor, JobNotFound
from conveyor.web.stream import Watcher, job_summary

from .web_helpers import (
    BEARER,
    TOKEN,
    AsgiClient,
    fail_without_retry,
    logged_in,
    register_types,
    running_worker,
    typed_app,
    wait_until,
)

BIDI = "\u202egpj.exe"
ESCAPE_SEQUENCE = "\x1b[2K\x1b]0;owned\x07"


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    with logged_in(app) as c:
        yield c


# -- 3. controls and bidi overrides are shown, not obeyed ------------------------------------------
def test_controls_and_bidi_in_job_text_are_shown_escaped(app: Conveyor,
                                                         client: AsgiClient) -> None:
    failing = app.enqueue("test.fail", {"message": BIDI}).id
    fail_without_retry(app, failing, message=f"{BIDI} {ESCAPE_SEQUENCE} <script>x</script>")
    other = app.enqueue("test.stepper", {"note": f"{BIDI}\u2066"}).id
    cancel = client.post(f"/api/jobs/{other}/cancel", headers=BEARER,
                         json={"reason": f"because {BIDI}\u200f"})
    assert cancel.status_code == 200
    pages = {"list": client.get("/").text, "failed": client.get(f"/jobs/{failing}").text,
             "params": client.get(f"/jobs/{other}").text}
    for name, html in pages.items():
        for hidden in ("\u202e", "\u2066", "\u200f", "\x1b", "\x07"):
            assert hidden not in html, f"{hidden!r} reached the {name} page"
    assert "\\u202egpj.exe" in pages["list"]
    assert "\\x1b[2K\\x1b]0;owned\\x07" in pages["failed"]
    assert "&lt;script&gt;x&lt;/script&gt;" in pages["failed"]
    assert "<script>x" not in pages["failed"]
    assert "because \\u202egpj.exe\\u200f" in pages["params"]  # the history's reason
    assert "\\u202egpj.exe\\u2066" in pages["params"]  # the params, still as JSON


def test_the_live_rows_escape_with_the_same_rule(client: AsgiClient) -> None:
    """The script renders stream rows itself: it must carry the same visible() rule."""
    script = client.get("/static/dashboard.js").text
    assert "function visible(" in script
    assert r"\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}" in script
    for use in ("visible(job.job_type)", "visible(job.queue)", "return visible(job.error"):
        assert use in script


def test_script_tags_in_type_queue_and_reason_stay_text(app: Conveyor,
                                                       client: AsgiClient) -> None:
    nasty = "<script>alert(1)</script>"
    job = app.enqueue("test.add", {"a": 1}, queue=f"q{nasty}")
    client.post(f"/api/jobs/{job.id}/cancel", headers=BEARER, json={"reason": nasty})
    for page in (client.get("/").text, client.get(f"/jobs/{job.id}").text):
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- 22. a finished job has no pending request, and names its worker -------------------------------
def test_a_cancelled_job_shows_no_request_and_the_worker_that_ran_it(
        app: Conveyor, client: AsgiClient) -> None:
    with running_worker(app):
        job = app.enqueue("test.stepper", {"steps": 1000})
        wait_until(lambda: app.get(job.id).state.value == "running", message="running")
        app.cancel(job.id)
        done = wait_until(lambda: (j := app.get(job.id)).state.value == "cancelled" and j,
                          message="cancelled")
    assert done.pending_requests == []
    assert done.worker_id is None  # the lease is released: the history names the worker
    row = re.search(rf'<tr data-job-id="{job.id}".*?</tr>', client.get("/").text, re.S)
    assert row
    assert '<span class="flags" data-field="flags"></span>' in row.group(0)
    assert "requested" not in row.group(0)
    page = client.get(f"/jobs/{job.id}").text
    worker = re.search(r'<dd data-detail="worker">([^<]*)</dd>', page)
    assert worker
    claims = [e.actor for e in app.history(job.id) if e.action == "start"]
    assert claims
    assert worker.group(1) == claims[-1] != "—"
    assert job_summary(done)["pending_requests"] == []


def test_a_running_job_still_shows_its_pending_request(app: Conveyor,
                                                       client: AsgiClient) -> None:
    with running_worker(app):
        job = app.enqueue("test.stepper", {"steps": 1000})
        wait_until(lambda: app.get(job.id).state.value == "running", message="running")
        app.pause(job.id)
        requested = app.get(job.id)
        if requested.state.value == "running":  # the worker may already have paused it
            assert requested.pending_requests == ["pause requested"]
        app.cancel(job.id)
        wait_until(lambda: app.get(job.id).state.value == "cancelled", message="cancelled")
    watcher = Watcher(app, [job.id])
    sent = [data for name, data in watcher.poll() if name == "job" and data["id"] == job.id]
    assert sent[0]["pending_requests"] == []


# -- 13. bad input is a 4xx ------------------------------------------------------------------------
def test_a_login_form_with_too_many_fields_is_a_4xx(client: AsgiClient) -> None:
    fields = {f"f{i}": "x" for i in range(20)}
    response = client.post("/login", data={"token": TOKEN, **fields})
    assert response.status_code == 400
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(("cursor", "status"), [("not an id!", 422), ("", 422),
                                                ("x" * 129, 422),
                                                ("0b9f6c1e-7d2a-4f43-9a5e-1c2d3e4f5a6b", 404)])
def test_a_bad_cursor_is_refused(client: AsgiClient, cursor: str, status: int) -> None:
    response = client.get("/api/jobs", params={"before": cursor}, headers=BEARER)
    assert response.status_code == status
    assert response.json()["error"] == ("not_found" if status == 404 else "invalid_option")
    assert client.get("/", params={"before": "not an id!"}).status_code == 422


@pytest.mark.parametrize("path", ["/api/events", "/api/counts", "/api/job-types",
                                  "/api/openapi.json", "/api/jobs"])
def test_unknown_query_parameters_are_422(client: AsgiClient, path: str) -> None:
    response = client.get(path, params={"bogus": "1"}, headers=BEARER)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_query"
    assert "'bogus'" in response.json()["message"]


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_app(request: pytest.FixtureRequest, db_url: str) -> Iterator[Conveyor]:
    if request.param == "sqlite":
        app = Conveyor(db_url)
    else:
        from tests.conftest import pg_test_url

        app = Conveyor(pg_test_url(), schema=f"cursor_{uuid.uuid4().hex[:12]}")
    yield app
    if request.param == "postgres":
        import psycopg

        schema = app.store.schema  # type: ignore[attr-defined]
        app.close()
        with psycopg.connect(pg_test_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    else:
        app.close()


def test_the_core_checks_the_cursor_once_for_every_client(any_store_app: Conveyor) -> None:
    app = any_store_app
    register_types(app)
    first = app.enqueue("test.add", {"a": 1})
    second = app.enqueue("test.add", {"a": 2})
    assert [j.id for j in app.list(before=second.id)] == [first.id]
    for bad in ("not an id!", "", "a\x00b", "x" * 129):
        with pytest.raises(ConfigurationError, match="before must be a job id"):
            app.list(before=bad)
    with pytest.raises(JobNotFound):
        app.list(before=str(uuid.uuid4()))
