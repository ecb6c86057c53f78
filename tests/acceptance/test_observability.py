"""Observability: /metrics (content and auth), a worker's metrics port, OpenTelemetry spans,
and job logs through the CLI, the HTTP API and the job's page."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor import Backoff, Conveyor, EnqueueRequest, JobContext, JobState
from conveyor.testing import drain
from conveyor.web.security import AuthConfig

from .cli_helpers import SAMPLE_APP, cli_on, started_process, wait_until
from .web_helpers import BEARER, READ_BEARER, READ_TOKEN, TOKEN, AsgiClient, free_port, make_web

METRICS_TOKEN = "metrics-token-" + "m" * 24
log = logging.getLogger("tests.observability")


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    app = make_app()

    @app.job("work")
    def work(ctx: JobContext, fail: bool = False) -> None:
        log.info("working <script>alert(1)</script> \x1b[2J")
        if fail and ctx.job.attempt == 0:
            raise RuntimeError("first try fails")

    return app


@pytest.fixture
def client(app: Conveyor) -> Iterator[AsgiClient]:
    auth = AuthConfig(token=TOKEN, read_token=READ_TOKEN, metrics_token=METRICS_TOKEN)
    c = AsgiClient(make_web(app, auth=auth))
    yield c
    c.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_after_real_jobs(app: Conveyor, client: AsgiClient) -> None:
    def runs(outcome: str) -> float:
        page = samples(client.get("/metrics", headers=READ_BEARER).text)
        return page.get(("conveyor_job_runs_total",
                         frozenset({("queue", "default"), ("outcome", outcome)})), 0.0)

    before = {outcome: runs(outcome) for outcome in ("completed", "retried")}
    app.enqueue("work")
    app.enqueue("work", {"fail": True}, backoff=Backoff(base=0, jitter=0))
    app.enqueue("work", queue="later", delay=3600)
    app.worker(handle_signals=False, poll_interval=0.02, metrics=True).run(burst=True)
    response = client.get("/metrics", headers=READ_BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    page = samples(response.text)
    assert page[("conveyor_jobs", frozenset({("queue", "default"), ("state", "completed")}))] \
        == 2
    assert page[("conveyor_jobs", frozenset({("queue", "later"), ("state", "pending")}))] == 1
    assert page[("conveyor_jobs", frozenset({("queue", "later"), ("state", "running")}))] == 0
    assert runs("completed") - before["completed"] == 2
    assert runs("retried") - before["retried"] == 1
    default = frozenset({("queue", "default")})
    assert page[("conveyor_job_run_seconds_count", default)] >= 3
    assert page[("conveyor_job_pickup_seconds_count", default)] >= 3
    assert page[("conveyor_job_retries_total", default)] >= 1
    assert ("conveyor_leases_reaped_total", frozenset()) in page
    # the fleet, from the workers' rows: the burst worker above stopped gracefully
    assert page[("conveyor_workers", frozenset({("status", "stopped")}))] == 1
    assert page[("conveyor_workers", frozenset({("status", "running")}))] == 0


def test_metrics_need_a_token_and_the_metrics_token_opens_nothing_else(
        client: AsgiClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for headers in (BEARER, READ_BEARER, {"Authorization": f"Bearer {METRICS_TOKEN}"}):
        assert client.get("/metrics", headers=headers).status_code == 200
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert client.get("/api/jobs", headers=scraper).status_code == 401
    assert client.get("/", headers=scraper).status_code == 303  # to the login page


def test_without_metrics_nothing_is_imported_and_nothing_traced(tmp_path: Any) -> None:
    """opentelemetry is blocked (as if not installed); prometheus_client is never asked for."""
    script = f"""
import sys
sys.modules["opentelemetry"] = None
from conveyor import Conveyor
app = Conveyor("sqlite:///{tmp_path / 'jobs.db'}")
app.job("noop")(lambda ctx: 1)
job = app.enqueue("noop")
app.worker(handle_signals=False, poll_interval=0.02).run(burst=True)
assert app.get(job.id).state.value == "completed" and app.get(job.id).trace is None
loaded = sorted(m for m in sys.modules if m.startswith(("prometheus", "opentelemetry.")))
print("loaded:", loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_a_run_span_is_linked_to_the_span_that_enqueued(app: Conveyor) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = trace.get_tracer("tests")

    @app.job("traced")
    def traced(ctx: JobContext) -> None:
        with tracer.start_as_current_span("inside the job"):
            pass

    with tracer.start_as_current_span("web request") as request_span:
        job = app.enqueue("traced")
    assert job.trace is not None and app.get(job.id).trace == job.trace
    drain(app)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run, inner = spans["conveyor.run traced"], spans["inside the job"]
    enqueued = request_span.get_span_context()
    assert run.kind is trace.SpanKind.CONSUMER
    assert [(link.context.trace_id, link.context.span_id) for link in run.links] == [
        (enqueued.trace_id, enqueued.span_id)]
    assert [event.name for event in run.events] == ["started", "completed"]
    assert run.attributes is not None and run.attributes["conveyor.job.id"] == job.id
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id


def test_every_job_of_a_batch_carries_the_span_it_was_enqueued_under(app: Conveyor) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    app.job("traced.batch")(lambda ctx: None)
    with trace.get_tracer("tests").start_as_current_span("bulk request") as span:
        batch = app.enqueue_many([EnqueueRequest("traced.batch")] * 3)
    outside = app.enqueue_many([EnqueueRequest("traced.batch")])
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert [j.trace.split("-")[1] if j.trace else None for j in batch] == [trace_id] * 3
    assert [app.get(j.id).trace for j in batch] == [j.trace for j in batch]
    assert outside[0].trace is None


def test_a_worker_serves_its_own_metrics(db_url: str, app: Conveyor) -> None:
    port = free_port()
    job = app.enqueue("work")  # not a sample type: the worker leaves it; math.add runs
    added = cli_on(db_url, "enqueue", "--app", SAMPLE_APP, "math.add", "-p", "a=1", "-p", "b=2",
                   "--json")
    assert added.exit_code == 0, added.output
    with started_process("--store", db_url, "worker", "--app", SAMPLE_APP, "--poll-interval",
                         "0.1", "--metrics-port", str(port)) as (worker, _):
        def scraped() -> dict[Any, float] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    page = samples(r.read().decode())
            except OSError:
                return None
            key = ("conveyor_job_runs_total",
                   frozenset({("queue", "default"), ("outcome", "completed")}))
            return page if page.get(key) == 1 else None

        wait_until(lambda: scraped() is not None, what="the worker's metrics")
        page = scraped()
        assert page is not None
        assert page[("conveyor_workers_running", frozenset())] == 1
        worker.terminate()
    assert app.get(job.id).state is JobState.PENDING


# -- job logs -------------------------------------------------------------------------------------
def test_logs_through_the_api_and_on_the_job_page(app: Conveyor, client: AsgiClient) -> None:
    job = app.enqueue("work", {"fail": True}, backoff=Backoff(base=0, jitter=0))
    drain(app)
    body = client.get(f"/api/jobs/{job.id}/logs", headers=READ_BEARER).json()
    assert [(ln["attempt"], ln["seq"], ln["level"]) for ln in body["logs"]] == [
        (0, 1, "INFO"), (1, 1, "INFO")]
    assert body["logs"][0]["message"] == "working <script>alert(1)</script> \x1b[2J"
    assert body["next_after"] == body["logs"][-1]["id"]
    one = client.get(f"/api/jobs/{job.id}/logs?attempt=1", headers=READ_BEARER).json()
    assert [ln["id"] for ln in one["logs"]] == [body["logs"][1]["id"]]
    after = client.get(f"/api/jobs/{job.id}/logs?after={body['next_after']}",
                       headers=READ_BEARER).json()
    assert after["logs"] == [] and after["next_after"] == body["next_after"]
    assert client.get("/api/jobs/00000000-0000-4000-8000-000000000000/logs",
                      headers=READ_BEARER).status_code == 404
    for bad in ("attempt=-1", "after=x", "limit=0", "limit=10001", "color=1"):
        assert client.get(f"/api/jobs/{job.id}/logs?{bad}",
                          headers=READ_BEARER).status_code == 422, bad
    page = client.get(f"/jobs/{job.id}", headers=READ_BEARER).text
    assert 'id="logs"' in page
    assert "working &lt;script&gt;alert(1)&lt;/script&gt; \\x1b[2J" in page
    assert "<script>alert" not in page


def test_conveyor_logs_prints_safely_and_follow_ends_with_the_job(
        db_url: str, app: Conveyor) -> None:
    go = threading.Event()

    @app.job("slow")
    def slow(ctx: JobContext) -> None:
        log.info("first \x1b]0;owned\x07")
        go.wait(30)
        log.warning("last")

    job = app.enqueue("slow")
    followed: list[Any] = []
    worker = app.worker(handle_signals=False, poll_interval=0.02, progress_interval=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        follower = threading.Thread(target=lambda: followed.append(cli_on(
            db_url, "logs", job.id, "--follow", "--interval", "0.05")), daemon=True)
        follower.start()
        wait_until(lambda: bool(app.logs(job.id)), what="the first line written")
        go.set()
        follower.join(timeout=30)
        assert not follower.is_alive(), "--follow did not end with the job"
    finally:
        go.set()
        worker.stop()
        thread.join(timeout=15)
    assert app.get(job.id).state is JobState.COMPLETED
    assert followed[0].exit_code == 0, followed[0].output
    printed = followed[0].stdout
    assert "INFO    #0 first \\x1b]0;owned\\x07\n" in printed
    assert printed.rstrip().endswith("WARNING #0 last")
    assert "\x1b" not in printed
    shown = cli_on(db_url, "logs", job.id, "--json")
    assert [line.count('"seq"') for line in shown.stdout.splitlines()] == [1, 1]
    missing = cli_on(db_url, "logs", "00000000-0000-4000-8000-000000000000")
    assert missing.exit_code == 3 and "Traceback" not in missing.output
