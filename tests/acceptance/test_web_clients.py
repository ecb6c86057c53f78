"""Clients generated from the live OpenAPI document by mainstream generators work, endpoint by
endpoint.

The document is fetched from a real served app (with registered job types, so ``job_type`` is an
enum and each type's params are described), then:

- openapi-python-client generates a Python package, which must cover every operation, and that
  package drives a job through enqueue, pause, resume and its history against the server;
- openapi-typescript generates TypeScript types, which must cover every operation too (skipped
  only where npm is not installed; CI has it).

The generators are installed once, outside the dev environment, by
``scripts/install-api-generators`` (``make test`` runs it first); generation runs once per
session.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.lifecycle import JobState

from .web_helpers import BEARER, TOKEN, ServerThread, Stepper, make_web, register_types, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".venv" / "tools"
PYTHON_GENERATOR = TOOLS / "openapi-python-client" / "bin" / "openapi-python-client"
TYPESCRIPT_GENERATOR = TOOLS / "openapi-typescript" / "node_modules" / ".bin" / "openapi-typescript"
PACKAGE = "conveyor_generated_client"


class Served:
    """A typed app on a SQLite file, served on a loopback port, with a worker running."""

    def __init__(self, folder: Path) -> None:
        self.app = Conveyor(f"sqlite:///{folder / 'jobs.db'}")
        register_types(self.app)
        self.stepper = Stepper(self.app, "test.steps")
        self.server = ServerThread(make_web(self.app))
        self.worker = self.app.worker(concurrency=2, lease_seconds=5, heartbeat_interval=0.5,
                                      poll_interval=0.05, progress_interval=0.05,
                                      handle_signals=False)

    def document(self) -> dict[str, Any]:
        response = httpx.get(f"{self.server.url}/api/openapi.json", headers=BEARER, timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import threading

    served = Served(tmp_path_factory.mktemp("served"))
    thread = threading.Thread(target=served.worker.run, name="test-worker", daemon=True)
    with served.server:
        thread.start()
        try:
            yield served
        finally:
            served.worker.stop()
            thread.join(timeout=15)
            served.app.close()


@pytest.fixture(scope="module")
def document_file(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(served.document()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def generators() -> None:
    """Install the pinned generators (a no-op once they are); a failure here fails the tests."""
    subprocess.run([str(ROOT / "scripts" / "install-api-generators")], check=True,
                   timeout=600)


def operation_ids(document: dict[str, Any]) -> set[str]:
    return {operation["operationId"] for item in document["paths"].values()
            for operation in item.values()}


@pytest.fixture(scope="module")
def python_client(generators: None, document_file: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The generated package, imported, and what the generator printed."""
    folder = tmp_path_factory.mktemp("python-client")
    result = subprocess.run(
        [str(PYTHON_GENERATOR), "generate", "--path", str(document_file),
         "--output-path", str(folder / PACKAGE), "--meta", "none"],
        capture_output=True, text=True, timeout=120, check=False,
        # the generator formats its output with ruff when it finds it on PATH
        env={"PATH": f"{PYTHON_GENERATOR.parent}:/usr/bin:/bin"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE), output
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_openapi_python_client_generates_every_operation(
        python_client: tuple[Any, str], document_file: Path) -> None:
    package, output = python_client
    assert "Warning" not in output and "Unable to parse" not in output, output
    document = json.loads(document_file.read_text(encoding="utf-8"))
    generated = {path.stem for path in Path(package.__file__).parent.glob("api/*/*.py")
                 if path.stem != "__init__"}
    assert operation_ids(document) <= generated
    assert "enqueue_job" in generated


def test_a_generated_python_client_drives_a_job(python_client: tuple[Any, str],
                                                served: Served) -> None:
    package, _ = python_client
    models = importlib.import_module(f"{PACKAGE}.models")
    jobs = importlib.import_module(f"{PACKAGE}.api.jobs")
    control = importlib.import_module(f"{PACKAGE}.api.control")
    for name in ("enqueue_job", "get_job", "job_history"):
        importlib.import_module(f"{jobs.__name__}.{name}")
    for name in ("pause_job", "resume_job"):
        importlib.import_module(f"{control.__name__}.{name}")
    with package.AuthenticatedClient(base_url=served.server.url, token=TOKEN,
                                     raise_on_unexpected_status=True) as client:
        drive_a_job(client, jobs, control, models, served)


def drive_a_job(client: Any, jobs: Any, control: Any, models: Any, served: Served) -> None:
    """Enqueue, pause, resume, finish and read the history, all through the generated code."""
    params = models.EnqueueRequestParams.from_dict({"steps": 2, "label": ["ü", 1.5, None]})
    body = models.EnqueueRequest(job_type=models.EnqueueRequestJobType("test.steps"),
                                 params=params, queue="default", priority=3)
    job = jobs.enqueue_job.sync(client=client, body=body)
    assert isinstance(job, models.Job), job
    assert job.params.to_dict() == {"steps": 2, "label": ["ü", 1.5, None]}

    def state() -> Any:
        current = jobs.get_job.sync(job.id, client=client)
        assert isinstance(current, models.JobDetail), current  # with upstream and downstream
        assert (current.upstream, current.downstream) == ([], [])
        return current

    wait_until(lambda: state().state.value == "running", message="the job to start")
    paused = control.pause_job.sync(job.id, client=client,
                                    body=models.ActionRequest(reason="via the client"))
    assert isinstance(paused, models.Job) and paused.pause_requested
    wait_until(lambda: state().state.value == "paused", message="the job to pause")
    resumed = control.resume_job.sync(job.id, client=client, body=models.ActionRequest())
    assert isinstance(resumed, models.Job), resumed
    wait_until(lambda: state().state.value == "running", message="the job to resume")
    served.stepper.step(2)
    done = wait_until(lambda: (s := state()).state.value == "completed" and s,
                      message="the job to complete")
    assert done.result == {"done": 2}

    history = jobs.job_history.sync(job.id, client=client)
    assert isinstance(history, models.History), history
    moves = [(e.action, e.to_state.value) for e in history.history]
    assert moves == [("create", "pending"), ("start", "running"), ("request_pause", "running"),
                     ("pause", "paused"), ("request_resume", "paused"), ("resume", "running"),
                     ("complete", "completed")]
    assert any(e.reason == "via the client" for e in history.history)
    assert served.app.get(job.id).state is JobState.COMPLETED

    refused = jobs.enqueue_job.sync_detailed(client=client, body=models.EnqueueRequest(
        job_type=models.EnqueueRequestJobType("test.add"), params=models.EnqueueRequestParams()))
    assert refused.status_code == 422  # test.add needs `a`: the server still says so
    assert isinstance(refused.parsed, models.Error) and "a" in refused.parsed.message


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed (CI has it)")
def test_openapi_typescript_generates_every_operation(generators: None, document_file: Path,
                                                      tmp_path: Path) -> None:
    output = tmp_path / "conveyor.ts"
    result = subprocess.run([str(TYPESCRIPT_GENERATOR), str(document_file), "-o", str(output)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text(encoding="utf-8")
    document = json.loads(document_file.read_text(encoding="utf-8"))
    declared = set(re.findall(r"^    (\w+): \{$", text.split("export interface operations")[1],
                              flags=re.MULTILINE))
    assert operation_ids(document) <= declared
    # a param may be any JSON value, not only an object (as a top-level additionalProperties
    # in JsonValue would have typed it), and the job types are the enum
    declaration = re.search(r"^\s+JsonValue: (.*)$", text, flags=re.MULTILINE)
    assert declaration is not None and not declaration.group(1).startswith("{"), declaration
    assert 'job_type: "test.add" | "test.fail" | "test.stepper" | "test.steps";' in text
