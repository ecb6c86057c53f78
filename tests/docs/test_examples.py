"""Every runnable code example of the README and the docs runs, and does what it says.

See :mod:`tests.docs.examples` for how a page's examples run and how a block is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import pg_test_url
from tests.docs.examples import ROOT, blocks, needs_postgres, pages

RUNNER = Path(__file__).with_name("run_page.py")
RUNNABLE = [page for page in pages()
            if any(b.kind and b.skip_reason is None for b in blocks(page))]


def test_every_skipped_example_says_why() -> None:
    unexplained = [b.where() for page in pages() for b in blocks(page)
                   if b.skip_reason is not None and len(b.skip_reason) < 10]
    assert unexplained == []


def test_the_pages_with_examples_are_found() -> None:
    names = {str(page.relative_to(ROOT)) for page in RUNNABLE}
    assert {"README.md", "docs/tutorial/first-jobs.md", "docs/tutorial/postgres.md"} <= names


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # a page's own pytest run needs none of ours
    schema = None
    if needs_postgres(page):
        url = pg_test_url()
        schema = f"docs_{uuid.uuid4().hex[:12]}"
        env["CONVEYOR_STORE"] = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    try:
        done = subprocess.run([sys.executable, str(RUNNER), str(page)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=110, check=False)
    finally:
        if schema is not None:
            _drop_schema(pg_test_url(), schema)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
