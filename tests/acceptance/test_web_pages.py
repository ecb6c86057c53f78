"""The server-rendered pages: what they show, and that each job's buttons are its legal actions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from importlib.resources import files

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import drain

from .web_helpers import AsgiClient, fail_without_retry, logged_in, typed_app


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return typed_app(make_app)


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    with logged_in(app) as c:
        yield c


def buttons(html: str, job_id: str) -> list[str]:
    return re.findall(rf'data-action="(\w+)" data-job-id="{re.escape(job_id)}"', html)


def test_each_jobs_buttons_are_exactly_its_legal_actions(app: Conveyor,
                                                         client: AsgiClient) -> None:
    done = app.enqueue("test.add", {"a": 1})
    exhausted = app.enqueue("test.fail", {}, max_attempts=0)
    drain(app)
    retryable = app.enqueue("test.fail", {}, max_attempts=2)
    fail_without_retry(app, retryable.id)
    pending = app.enqueue("test.add", {"a": 1}, delay=60)
    cancelled = app.enqueue("test.add", {"a": 1}, delay=60)
    app.cancel(cancelled.id)
    jobs = [app.get(j.id) for j in (done, exhausted, retryable, pending, cancelled)]
    assert {j.state for j in jobs} == {JobState.COMPLETED, JobState.FAILED, JobState.PENDING,
                                       JobState.CANCELLED}
    dashboard = client.get("/").text
    for job in jobs:
        assert buttons(dashboard, job.id) == job.legal_actions, job.state
        page = client.get(f"/jobs/{job.id}").text
        assert buttons(page, job.id) == job.legal_actions, job.state
    assert buttons(dashboard, retryable.id) == ["retry"]
    assert buttons(dashboard, pending.id) == ["cancel"]
    assert buttons(dashboard, done.id) == ["requeue"]


def test_counts_filters_and_pages(app: Conveyor, client: AsgiClient) -> None:
    ids = [app.enqueue("test.add", {"a": i}, delay=60).id for i in range(55)]
    app.cancel(ids[0])
    page = client.get("/").text
    assert '<span class="n" data-count="pending">54</span>' in page
    assert '<span class="n" data-count="cancelled">1</span>' in page
    assert '<span class="n" data-count="total">55</span>' in page
    assert page.count("<tr data-job-id=") == 50
    older = re.search(r'href="/\?before=([\w-]+)">Older jobs', page)
    assert older
    assert older.group(1) == ids[5]
    rest = client.get(f"/?before={older.group(1)}").text
    assert rest.count("<tr data-job-id=") == 5
    only = client.get("/?state=cancelled").text
    assert only.count("<tr data-job-id=") == 1
    assert '<option value="cancelled" selected>' in only
    assert client.get("/?job_type=test.fail").text.count("<tr data-job-id=") == 0
    assert "No jobs match." in client.get("/?job_type=test.fail").text


def test_job_page_shows_params_checkpoint_error_and_history(app: Conveyor,
                                                            client: AsgiClient) -> None:
    job = app.enqueue("test.fail", {"message": "disk full"}, max_attempts=0)
    drain(app)
    page = client.get(f"/jobs/{job.id}").text
    assert "<strong>RuntimeError</strong>: disk full" in page
    assert "Traceback (most recent call last)" in page
    assert "&quot;message&quot;: &quot;disk full&quot;" in page
    assert re.findall(r"<strong>(\w+)</strong> <span class=\"change\">", page) == [
        "create", "start", "fail"]
    done = app.enqueue("test.add", {"a": 2, "b": 5})
    drain(app)
    assert "<h2>Result</h2><pre>7</pre>" in client.get(f"/jobs/{done.id}").text


def test_html_errors_are_pages_not_tracebacks(client: AsgiClient) -> None:
    missing = client.get("/jobs/no-such-job")
    assert missing.status_code == 404
    assert "No job with id &#x27;no-such-job&#x27;" in missing.text
    bad = client.get("/?state=sleeping")
    assert bad.status_code == 422
    assert "unknown state &#x27;sleeping&#x27;" in bad.text
    assert client.get("/nowhere").status_code == 404


def test_static_files_ship_inside_the_package() -> None:
    static = files("conveyor.web") / "static"
    for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
        assert (static / name).is_file()
