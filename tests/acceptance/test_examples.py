"""The docker compose example says what it means: every command in it is a real conveyor command
with real options, the files it builds from exist, and its application module runs jobs.

Docker itself is not run here (no images can be pulled); what can drift from the code is
checked instead: the CLI parses each service's command exactly as the container would.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from conveyor import Conveyor
from conveyor.cli import cli

from .cli_helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "docker-compose"
COMPOSE: dict[str, Any] = yaml.safe_load((EXAMPLE / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
CONVEYOR_SERVICES = sorted(name for name, service in SERVICES.items()
                           if service.get("command", [""])[0] == "conveyor")


def test_compose_runs_postgres_two_workers_and_the_dashboard() -> None:
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert "healthcheck" in SERVICES["postgres"]
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    assert SERVICES["worker"]["command"][:2] == ["conveyor", "worker"]
    assert SERVICES["dashboard"]["command"][:2] == ["conveyor", "dashboard"]
    assert SERVICES["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]  # loopback only
    assert CONVEYOR_SERVICES == ["dashboard", "migrate", "worker"]
    for name in CONVEYOR_SERVICES:
        store = SERVICES[name]["environment"]["CONVEYOR_STORE"]
        assert store.startswith("postgresql://") and "@postgres:5432/" in store, name
    # the token is the operator's, never a default baked into the file
    assert SERVICES["dashboard"]["environment"]["CONVEYOR_TOKEN"].startswith(
        "${CONVEYOR_TOKEN:?")


def test_the_image_builds_from_files_that_exist() -> None:
    build = SERVICES["worker"]["build"]
    context = (EXAMPLE / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == REPO and dockerfile.is_file()
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(encoding="utf-8"), re.M)
    sources = [source for line in copied for source in line.split()]
    assert "src" in sources and "examples/docker-compose/jobsapp.py" in sources
    for source in sources:
        assert (context / source).exists(), source
    app_setting = re.search(r"CONVEYOR_APP=(\S+)", dockerfile.read_text(encoding="utf-8"))
    assert app_setting and app_setting.group(1) == "jobsapp:app"


def parse(command: list[str]) -> Any:
    """Parse ``conveyor ARGS`` as the CLI would (Typer's own click), stopping short of running
    it: an unknown command, an unknown option or a bad value raises a usage error here."""
    group: Any = typer.main.get_command(cli)
    context = group.make_context("conveyor", command[1:])
    name, sub, rest = group.resolve_command(context, [*context._protected_args, *context.args])
    assert sub is not None and name is not None, command
    return sub.make_context(name, rest, parent=context)


@pytest.mark.parametrize("service", CONVEYOR_SERVICES)
def test_every_command_is_a_real_conveyor_command(service: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {key: str(value) for key, value in
                   SERVICES[service]["environment"].items() if not str(value).startswith("$")}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    command = SERVICES[service]["command"]
    context = parse(command)
    given = {arg.split("=")[0] for arg in command if arg.startswith("--")}
    known = {opt for param in context.command.params for opt in param.opts}
    assert given <= known, (service, given - known)
    help_text = run_cli(*command[1:2], "--help")
    assert help_text.exit_code == 0, help_text.output


@pytest.fixture
def jobsapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's application module, imported as the containers do, on a SQLite file."""
    monkeypatch.setenv("CONVEYOR_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("jobsapp", None)
    module = importlib.import_module("jobsapp")
    yield module
    module.app.close()
    sys.modules.pop("jobsapp", None)


def test_the_application_module_imports_and_runs_its_jobs(jobsapp: Any, tmp_path: Path) -> None:
    app: Conveyor = jobsapp.app
    assert set(app.job_types) == {"reports.generate", "emails.send"}
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    enqueued = run_cli("--store", store, "--app", "jobsapp:app", "enqueue", "reports.generate",
                       "--params", '{"month": "2026-10", "pages": 1}')
    assert enqueued.exit_code == 0, enqueued.output
    job_id = enqueued.output.split()[1]  # "enqueued: <id>  <type>  pending"
    mail = app.enqueue("emails.send", {"to": "ops@example.com", "subject": "hi"})
    worked = run_cli("--store", store, "--app", "jobsapp:app", "worker", "--burst",
                     "--poll-interval", "0.05")
    assert worked.exit_code == 0, worked.output
    assert app.get(job_id).result == {"month": "2026-10", "pages": 1}
    assert app.get(mail.id).queue == "emails"
    assert app.get(mail.id).result == "sent 'hi' to ops@example.com"


@pytest.mark.parametrize("command", [["conveyor", "worker", "--concurency", "4"],
                                     ["conveyor", "wrokers"],
                                     ["conveyor", "dashboard", "--port", "http"]])
def test_the_check_refuses_what_the_cli_would(command: list[str]) -> None:
    with pytest.raises(Exception, match=r"No such option|No such command|valid integer"):
        parse(command)
