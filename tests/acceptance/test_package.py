"""The built package works on its own: a wheel and an sdist are built, the wheel is installed
into a fresh virtual environment without the dev extras, and conveyor runs from there.

The dependencies come from the package index as a user's ``pip install`` would fetch them (a
warm pip cache makes that quick); the environment has no access to the project's venv.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import conveyor

ROOT = Path(__file__).resolve().parents[2]
JOB_APP = """
from conveyor import Conveyor, JobContext

app = Conveyor("sqlite:///jobs.db")


@app.job("add")
def add(ctx: JobContext, a: int, b: int) -> int:
    ctx.checkpoint({"seen": [a, b]})
    return a + b
"""

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("CONVEYOR_")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
         cwd=out)
    return out


def test_wheel_and_sdist_hold_the_package_and_its_metadata(dist: Path) -> None:
    version = conveyor.__version__
    wheel = dist / f"conveyor-{version}-py3-none-any.whl"
    sdist = dist / f"conveyor-{version}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"conveyor-{version}.dist-info/METADATA").decode()
    assert {"conveyor/py.typed", "conveyor/__init__.py", "conveyor/cli/__init__.py"} <= names
    assert f"Version: {version}" in metadata
    required = {re.split(r"[\s\[<>=~!;]", line.split(":", 1)[1].strip())[0].lower()
                for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"typer", "rich"} <= required
    assert not required & {"psycopg", "psycopg-pool", "starlette", "uvicorn", "pytest", "mkdocs"}
    for field in ("License-Expression: MIT", "Requires-Python: >=3.11",
                  "Classifier: Typing :: Typed", "Provides-Extra: postgres",
                  "Provides-Extra: web", "Description-Content-Type: text/markdown"):
        assert field in metadata
    assert "Durable background jobs" in metadata  # the README is the long description
    with tarfile.open(sdist) as tf:
        members = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    assert {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml",
            "src/conveyor/py.typed"} <= members


CORE_ONLY = """
import sys

from conveyor.testing import drain
from myapp import app

job = app.enqueue("add", {"a": 1, "b": 1})
drain(app)
assert app.get(job.id).result == 2
loaded = sorted(name for name in ("psycopg", "starlette", "uvicorn") if name in sys.modules)
assert loaded == [], f"the SQLite path imported {loaded}"
"""


def test_the_wheel_installs_and_runs_without_dev_extras(dist: Path, tmp_path: Path) -> None:
    wheel = next(dist.glob("conveyor-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python, cli = venv / "bin" / "python", venv / "bin" / "conveyor"
    # One install (a resolve from the index is the slow part): the extras a user adds, never
    # the dev ones; the SQLite run below shows the core path imports none of the extras.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--disable-pip-version-check", "--no-compile",
          f"conveyor[postgres,web] @ {wheel.as_uri()}"],
         cwd=tmp_path, timeout=300)

    installed = _run([str(python), "-c", "import conveyor, importlib.util as u; "
                      "print(conveyor.__file__, conveyor.__version__, "
                      "u.find_spec('pytest') is None, u.find_spec('hypothesis') is None)"],
                     cwd=tmp_path).split()
    assert installed[0].startswith(str(venv))          # the wheel, not the source tree
    assert installed[1] == importlib.metadata.version("conveyor") == conveyor.__version__
    assert installed[2:] == ["True", "True"]            # no dev extra pulled in

    assert "Usage: conveyor" in _run([str(cli), "--help"], cwd=tmp_path)
    (tmp_path / "myapp.py").write_text(JOB_APP, encoding="utf-8")
    _run([str(cli), "enqueue", "--app", "myapp:app", "add", "-p", "a=2", "-p", "b=3"],
         cwd=tmp_path)
    _run([str(cli), "worker", "--app", "myapp:app", "--burst"], cwd=tmp_path)
    listed = json.loads(_run([str(cli), "--store", "sqlite:///jobs.db", "ls", "--json"],
                             cwd=tmp_path))
    assert [(job["state"], job["result"]) for job in listed["jobs"]] == [("completed", 5)]
    _run([str(python), "-c", CORE_ONLY], cwd=tmp_path)

    _run([str(python), "-c", "import conveyor.web, conveyor.stores.postgres; "
          "from conveyor.web import create_app, serve; "
          "from conveyor.stores.postgres.store import PostgresStore"], cwd=tmp_path)
