"""The OpenAPI schema is the truth: fuzz the API against it, and check real jobs against it.

schemathesis generates requests from the schema (valid ones, and by default some invalid ones)
and fails on any 5xx, any status, content type, header or body that the schema does not
describe, and any endpoint that answers without its security scheme. The app behind it is on an
in-memory SQLite store seeded with jobs in every state, so the lists it reads are not empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from conveyor import Conveyor
from conveyor.model import JOB_ID_PATTERN
from conveyor.testing import drain
from conveyor.web.apidoc import BEGIN, END, render_reference
from conveyor.web.openapi import NO_NUL

from .web_helpers import BEARER, TOKEN, fail_without_retry, make_web, register_types


def seeded_app() -> Conveyor:
    """An app with jobs completed, exhausted-failed, failed-retryable, cancelled and pending."""
    app = Conveyor("sqlite:///:memory:")
    register_types(app)
    app.enqueue("test.add", {"a": 1, "b": 2})
    app.enqueue("test.fail", {"message": "kaput"}, max_attempts=0)
    drain(app)
    app.cancel(app.enqueue("test.add", {"a": 3}).id)
    fail_without_retry(app, app.enqueue("test.fail", {}, max_attempts=2).id)
    app.enqueue("test.stepper", {"steps": 4}, delay=3600)
    return app


APP = seeded_app()
SEEDED = APP.list(limit=50)  # before the fuzz adds its own jobs
WEB = make_web(APP)
# The token goes in through schemathesis's own auth config (not as a header on each call), so
# that its negative cases that drop the Authorization header really go without one.
CONFIG = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}})
schema = schemathesis.openapi.from_asgi("/api/openapi.json", WEB, config=CONFIG, headers=BEARER)
# The event stream never ends; tests/acceptance/test_web_stream.py covers it on a real server.
fuzzed = schema.exclude(path="/api/events")


@fuzzed.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate()


@pytest.mark.parametrize("job", SEEDED, ids=lambda j: f"{j.state.value}")
def test_real_jobs_in_every_state_match_the_schema(job: Any) -> None:
    for path in ("/api/jobs/{job_id}", "/api/jobs/{job_id}/history"):
        case = schema[path]["GET"].Case(path_parameters={"job_id": job.id})
        response = case.call_and_validate(headers=BEARER)
        assert response.status_code == 200


def test_seeded_states_cover_the_interesting_shapes() -> None:
    states = {(j.state.value, j.error is not None, j.is_terminal) for j in SEEDED}
    assert {("completed", False, True), ("failed", True, True), ("failed", True, False),
            ("cancelled", False, True), ("pending", False, False)} <= states


def test_job_ids_fit_the_documented_pattern() -> None:
    import re

    assert all(re.fullmatch(JOB_ID_PATTERN, j.id) for j in APP.list(limit=200))


def test_the_schema_lists_every_api_route() -> None:
    from starlette.routing import Route

    from conveyor.web.middleware import HEALTH_PATHS

    routes = {(r.path, m) for r in WEB.routes if isinstance(r, Route)
              for m in (r.methods or ()) if m != "HEAD"
              and (r.path.startswith("/api/") or r.path in HEALTH_PATHS)}
    documented = {(path, method.upper()) for path, item in schema.raw_schema["paths"].items()
                  for method in item}
    assert routes == documented


class FreshApp:
    """An ASGI app that can be swapped for a new one, so each stateful run starts empty.

    Hypothesis replays the choices of a run to explore around it; against a store that kept
    the jobs of earlier runs, the same choices would meet different data and it would (rightly)
    call the test flaky.
    """

    def __init__(self) -> None:
        self.conveyor: Conveyor | None = None
        self.inner: Any = None
        self.reset()

    def reset(self) -> None:
        if self.conveyor is not None:
            self.conveyor.close()
        self.conveyor = Conveyor("sqlite:///:memory:")
        register_types(self.conveyor)
        self.inner = make_web(self.conveyor)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


FRESH = FreshApp()
stateful_schema = schemathesis.openapi.from_asgi(
    "/api/openapi.json", FRESH, config=CONFIG, headers=BEARER).exclude(path="/api/events")


class APIWorkflow(stateful_schema.as_state_machine()):  # type: ignore[misc]
    """Stateful fuzzing: follow the schema's links (enqueue -> cancel -> requeue -> get ...),
    so that the control endpoints meet real jobs in real states, not only unknown ids."""

    def setup(self) -> None:
        FRESH.reset()


TestAPIWorkflow = APIWorkflow.TestCase
TestAPIWorkflow.settings = settings(
    max_examples=20, stateful_step_count=8, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- the reference in docs/http-api.md ------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_path_of_the_schema_is_in_the_http_api_doc() -> None:
    text = (DOCS / "http-api.md").read_text(encoding="utf-8")
    for path, item in schema.raw_schema["paths"].items():
        for method in item:
            assert f"`{method.upper()} {path}`" in text, f"{method.upper()} {path} undocumented"


def test_the_http_api_reference_is_generated_from_the_schema() -> None:
    text = (DOCS / "http-api.md").read_text(encoding="utf-8")
    assert f"{BEGIN}\n{render_reference()}{END}" in text, (
        "docs/http-api.md is out of date: run "
        "`.venv/bin/python -m conveyor.web.apidoc docs/http-api.md`")


def test_the_dashboard_doc_shows_the_screenshot() -> None:
    text = (DOCS / "dashboard.md").read_text(encoding="utf-8")
    assert "](images/dashboard.png)" in text
    assert (DOCS / "images" / "dashboard.png").stat().st_size > 10_000


def test_params_keys_with_a_nul_are_outside_the_schema() -> None:
    """The core refuses a NUL in a params key as in a value; the schema must say so, or a
    generated client (and the fuzzer) would send a 'valid' body that the API rejects."""
    enqueue = schema.raw_schema["components"]["schemas"]["EnqueueRequest"]
    assert enqueue["properties"]["params"]["propertyNames"]["pattern"] == NO_NUL
    branches = []
    link = enqueue
    while "if" in link:  # the chain of 'if job_type is X then its params, else ...'
        branches.append(link["then"]["properties"]["params"])
        link = link.get("else", {})
    assert len(branches) == 3
    kwargs_branches = [p for p in branches if p.get("additionalProperties") not in (None, False)]
    assert kwargs_branches, "test.stepper takes **kwargs: its branch allows any key"
    for params in kwargs_branches:
        assert params["propertyNames"]["pattern"] == NO_NUL, params
