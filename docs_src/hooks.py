"""MkDocs hooks: reference pages generated from the code at build time.

The command-line reference is read from the Click command tree that ``conveyor`` runs, the
configuration reference from the signatures that take the options, and the error reference
from the error classes themselves, so none of them can drift from the code: a renamed option
or a new error shows up in the next ``make docs``. The pages exist only in the built site.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import typer.main
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from conveyor import errors
from conveyor.app import DEFAULT_URL, Conveyor
from conveyor.cli import cli
from conveyor.cli.options import EXIT_CODES, exit_code_for
from conveyor.stores.postgres.config import _DEFAULTS as PG_CONNECTION_DEFAULTS
from conveyor.stores.postgres.config import SESSION_BOUNDS
from conveyor.stores.postgres.store import PostgresStore
from conveyor.web.server import METRICS_TOKEN_ENV, READ_TOKEN_ENV, TOKEN_ENV, serve
from conveyor.worker import Worker

sys.path.insert(0, str(Path(__file__).parent))
from plots import add_plots  # beside this file, which MkDocs loads by path

_MARKUP = re.compile(r"\[/?[a-z ]+\]")


def _plain(text: str | None) -> str:
    """Help text without Rich markup, on one line, safe in a Markdown table cell."""
    return " ".join(_MARKUP.sub("", text or "").split()).replace("|", "\\|")


def _param_row(param: Any) -> str:
    if param.param_type_name != "option":
        need = "required" if param.required else "optional"
        return f"| `{param.display_name_raw}` | argument | | {need} |"
    names = ", ".join(f"`{name}`" for name in (*param.opts, *param.secondary_opts))
    default = param.default
    if param.metavar:
        kind = f"`{param.metavar}`"
    elif isinstance(default, bool):
        kind = "flag"
    else:
        kind = type(default).__name__ if default is not None else "value"
    if param.multiple:
        kind += ", repeatable"
    shown = not (default is None or default is False or default in ("", ()))
    env = f" (env `{param.envvar}`)" if param.envvar else ""
    return f"| {names} | {kind} | {f'`{default}`' if shown else ''} | {_plain(param.help)}{env} |"


def _command_section(name: str, command: Any, level: str) -> list[str]:
    lines = [f"{level} `{name}`", "", _plain(command.help), ""]
    usage_ctx = command.context_class(command, info_name=name)
    usage = " ".join([name, *command.collect_usage_pieces(usage_ctx)])
    lines += ["```text", usage, "```", ""]
    params = [p for p in command.params if p.name != "help"]
    if params:
        lines += ["| option | value | default | meaning |", "|---|---|---|---|"]
        lines += [_param_row(param) for param in params]
        lines.append("")
    return lines


def cli_reference() -> str:
    """Every command, argument and option of ``conveyor``, from the command tree itself."""
    root: Any = typer.main.get_command(cli)  # typer's own copy of Click: duck-typed here
    lines = [
        "# Command-line reference",
        "",
        "Generated from the commands at build time (`conveyor COMMAND --help` shows the same).",
        "The task-oriented introduction is [the command line](../cli.md).",
        "",
        _plain(EXIT_CODES),
        "",
    ]
    lines += _command_section("conveyor", root, "##")
    ctx = root.context_class(root, info_name="conveyor")
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        if command is not None:
            lines += _command_section(f"conveyor {name}", command, "##")
    return "\n".join(lines) + "\n"


def _signature_rows(func: Any, skip: tuple[str, ...] = ("self",)) -> list[str]:
    rows = []
    for param in inspect.signature(func).parameters.values():
        if param.name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = "required" if param.default is param.empty else f"`{param.default!r}`"
        rows.append(f"| `{param.name}` | {default} |")
    return rows


def _table(title: str, intro: str, func: Any, skip: tuple[str, ...] = ("self",)) -> list[str]:
    return [f"## {title}", "", intro, "", "| option | default |", "|---|---|",
            *_signature_rows(func, skip), ""]


def configuration_reference() -> str:
    """Every option with its default, read from the signatures that accept them."""
    lines = [
        "# Configuration reference",
        "",
        "Every option conveyor takes, with its default, generated from the code at build time.",
        "Configuration is code (keyword arguments) plus the store URL and a few environment",
        "variables; there is no configuration file.",
        "",
        "## Environment variables",
        "",
        "| variable | used by | meaning |",
        "|---|---|---|",
        f"| `CONVEYOR_STORE` | CLI | the store URL (default `{DEFAULT_URL}`) |",
        "| `CONVEYOR_APP` | CLI | the app as `module:attribute`, for `enqueue` and `worker` |",
        f"| `{TOKEN_ENV}` | dashboard | the read-write API token |",
        f"| `{READ_TOKEN_ENV}` | dashboard | the read-only API token |",
        f"| `{METRICS_TOKEN_ENV}` | dashboard | a token that opens `/metrics` only |",
        "",
        "## Store URLs",
        "",
        f"- `sqlite:///PATH` (default `{DEFAULT_URL}`, relative to the working folder;",
        "  `sqlite:////abs/path.db` for an absolute path). The one option is",
        "  `?synchronous=normal` (default) or `?synchronous=full`",
        "  ([what each survives](../workers.md#sqlite-durability-synchronous)).",
        "- `postgresql://user:password@host:port/db` with libpq's own query parameters, and",
        "  `?schema=NAME` (default `conveyor`). conveyor adds these libpq defaults unless the",
        "  URL sets them: "
        + ", ".join(f"`{k}={v}`" for k, v in PG_CONNECTION_DEFAULTS.items()) + ";",
        "  and these session bounds (milliseconds), which the URL's `options` may override: "
        + ", ".join(f"`{k}={v}`" for k, v in SESSION_BOUNDS.items()) + ".",
        "",
    ]
    lines += _table("`Conveyor(url, **store_options)`", "Store options are passed on to the "
                    "store; PostgreSQL takes `schema`, `min_size`, `max_size` and `timeout` "
                    "(pool sizes and the pool's wait, see [PostgreSQL](../postgres.md)).",
                    Conveyor.__init__, ("self", "store", "rand"))
    lines += _table("PostgreSQL store options: `Conveyor(url, schema=..., max_size=...)`",
                    "Passed through `Conveyor(url, ...)` to the PostgreSQL store.",
                    PostgresStore.__init__, ("self", "url"))
    lines += _table("`@app.job(name, ...)`", "Defaults of a job type; `enqueue` may override "
                    "each for one job.", Conveyor.job)
    lines += _table("`app.enqueue(job_type, params, ...)`", "Per-job options (`None` takes "
                    "the job type's default).", Conveyor.enqueue)
    lines += _table("Workers: `app.run_worker(...)`, `app.worker(...)`, `conveyor worker`",
                    "The worker's timings ([what each does](../workers.md#options)).",
                    Worker.__init__, ("self", "engine"))
    lines += _table("Dashboard: `conveyor dashboard`", "The server's options (the CLI "
                    "flags have the same names).", serve, ("app", "out", "uvicorn_options"))
    return "\n".join(lines) + "\n"


def _error_classes() -> list[type[BaseException]]:
    found = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
             if issubclass(obj, errors.ConveyorError) and obj.__module__ == errors.__name__]
    return sorted(found, key=lambda cls: (len(cls.__mro__), cls.__name__))


def errors_reference() -> str:
    """Every error class, where it sits in the hierarchy, when it is raised, its exit code."""
    lines = [
        "# Errors reference",
        "",
        "Every error conveyor raises on purpose derives from `ConveyorError`, so",
        "`except ConveyorError` handles them all; each subclass says what went wrong. Errors",
        "a caller causes change nothing. Generated from `conveyor.errors` at build time.",
        "",
        "| error | base | raised when | CLI exit code |",
        "|---|---|---|---|",
    ]
    for cls in _error_classes():
        base = cls.__mro__[1].__name__
        doc = _plain((inspect.getdoc(cls) or "").split("\n\n")[0])
        try:
            code: object = exit_code_for(cls.__new__(cls))  # type: ignore[call-overload]
        except TypeError:
            code = ""
        lines.append(f"| `{cls.__name__}` | `{base}` | {doc} | {code} |")
    lines += ["", "`WaitTimeout` (from `conveyor`, also a `TimeoutError`): "
              + _plain(inspect.getdoc(__import__("conveyor").WaitTimeout)), ""]
    return "\n".join(lines) + "\n"


GENERATED = {
    "reference/cli-commands.md": cli_reference,
    "reference/configuration.md": configuration_reference,
    "reference/errors.md": errors_reference,
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages to the site."""
    for path, render in GENERATED.items():
        files.append(File.generated(config, path, content=render()))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Draw the benchmark tables as bar charts (from the tables themselves)."""
    return add_plots(markdown) if page.file.src_uri == "benchmarks.md" else markdown
