"""Runs one page's examples in the working folder: ``python run_page.py PAGE``.

A child process per page, so that the modules a page defines (``myapp``) and the threads it
starts never leak into another page or into the test process. Exits non-zero, naming the
block, on the first block that fails.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import subprocess
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.docs.examples import blocks, files_from


def _execute(code: str, where: str, namespace: dict[str, object]) -> None:
    """Run a block; one with a top-level ``await`` (as a reader types it in ``python -m
    asyncio``) runs on its own event loop."""
    compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))  # a coroutine, because of the flag
    else:
        exec(compiled, namespace)


def main(page: Path) -> int:
    sys.path.insert(0, str(Path.cwd()))
    for source in files_from(page):
        for block in blocks(source):
            if block.file_name:
                Path(block.file_name).write_text(block.code, encoding="utf-8")
    namespace: dict[str, object] = {"__name__": "__example__"}
    for block in blocks(page):
        if not block.kind or block.skip_reason is not None:
            continue
        if block.file_name:
            Path(block.file_name).write_text(block.code, encoding="utf-8")
        elif block.kind == "python":
            try:
                _execute(block.code, block.where(), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"example failed: {block.where()}", file=sys.stderr)
                return 1
        else:
            sys.stdout.flush()
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], check=False)
            if done.returncode != 0:
                print(f"example failed (exit {done.returncode}): {block.where()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
