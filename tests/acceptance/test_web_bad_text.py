"""The HTTP side of the core's text and run_at checks: a 4xx JSON error, and nothing written,
on both stores."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.web_helpers import BEARER, AsgiClient, make_web
from tests.conftest import app_on


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AsgiClient]:
    with app_on(request.param, tmp_path, "webtext") as app:
        app.job("t")(lambda ctx: None)
        app.enqueue("t")
        with contextlib.closing(AsgiClient(make_web(app))) as c:
            yield c


def _post(client: AsgiClient, url: str, body: dict[str, object]) -> httpx.Response:
    """As JSON with \\u escapes, as a client would send a lone surrogate."""
    return client.post(url, content=json.dumps(body), headers={
        **BEARER, "content-type": "application/json"})


def _jobs(client: AsgiClient) -> list[dict[str, object]]:
    response = client.get("/api/jobs", headers=BEARER)
    assert response.status_code == 200
    jobs: list[dict[str, object]] = response.json()["jobs"]
    return jobs


@pytest.mark.parametrize("body", [
    {"job_type": "t", "run_at": "0001-01-01T00:00:00+14:00"},
    {"job_type": "t", "run_at": "9999-12-31T23:59:59-23:59"},
    {"job_type": "t", "queue": "a\u0000b"},
    {"job_type": "t", "queue": "a\ud800b"},
    {"job_type": "t", "queue": "q" * 201},
])
def test_bad_enqueue_is_422_and_writes_nothing(client: AsgiClient,
                                               body: dict[str, object]) -> None:
    before = _jobs(client)
    response = _post(client, "/api/jobs", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]
    assert _jobs(client) == before


@pytest.mark.parametrize("reason", ["a\u0000b", "a\udcffb"])
def test_bad_reason_is_422_and_writes_nothing(client: AsgiClient, reason: str) -> None:
    (job,) = _jobs(client)
    response = _post(client, f"/api/jobs/{job['id']}/cancel", {"reason": reason})
    assert response.status_code == 422, response.text
    assert _jobs(client) == [job]


def test_an_id_with_a_nul_is_404(client: AsgiClient) -> None:
    response = client.get("/api/jobs/abc%00def", headers=BEARER)
    assert response.status_code == 404, response.text
