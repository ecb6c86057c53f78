"""The examples runner itself: a broken example fails, naming its block; a skipped one and an
output block do not run; a ``# NAME.py`` block becomes a file the next blocks import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.docs.examples import blocks

RUNNER = Path(__file__).with_name("run_page.py")
FENCE = "```"


def _run(page: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), str(page)], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def _page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(body.replace("~~~", FENCE), encoding="utf-8")
    (tmp_path / "work").mkdir()
    return page


def test_files_skips_and_shared_names(tmp_path: Path) -> None:
    page = _page(tmp_path, """# A page

~~~python
# helper.py
VALUE = 41
~~~

~~~python
from helper import VALUE
answer = VALUE + 1
~~~

<!-- example: skip: would fail if it ran -->
~~~python
raise SystemExit(3)
~~~

~~~text
raise SystemExit(4)   (output, never run)
~~~

~~~python
assert answer == 42
print("answer", answer)
~~~

~~~sh
test -f helper.py && echo "shell sees the file"
~~~
""")
    assert [b.skip_reason for b in blocks(page)] == [None, None, "would fail if it ran", None,
                                                     None, None]
    done = _run(page, tmp_path / "work")
    assert done.returncode == 0, done.stderr
    assert "answer 42" in done.stdout
    assert "shell sees the file" in done.stdout


def test_a_block_with_top_level_await_runs_on_an_event_loop(tmp_path: Path) -> None:
    page = _page(tmp_path, "# P\n\n~~~python\nimport asyncio\n"
                           "value = await asyncio.sleep(0, result=7)\n~~~\n\n"
                           "~~~python\nassert value == 7\nprint('awaited', value)\n~~~\n")
    done = _run(page, tmp_path / "work")
    assert done.returncode == 0, done.stderr
    assert "awaited 7" in done.stdout


def test_a_broken_python_example_fails_naming_its_block(tmp_path: Path) -> None:
    page = _page(tmp_path, "# P\n\n~~~python\nx = 1\n~~~\n\n~~~python\nassert x == 2\n~~~\n")
    done = _run(page, tmp_path / "work")
    assert done.returncode == 1
    assert "example failed" in done.stderr
    assert "page.md:7" in done.stderr


def test_a_broken_shell_example_fails_naming_its_block(tmp_path: Path) -> None:
    page = _page(tmp_path, "# P\n\n~~~sh\nfalse | cat\necho never\n~~~\n")
    done = _run(page, tmp_path / "work")
    assert done.returncode == 1
    assert "page.md:3" in done.stderr
    assert "never" not in done.stdout
