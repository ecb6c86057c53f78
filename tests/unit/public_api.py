"""The public API as data, for the snapshot test (``tests/unit/test_public_api.py``).

What the versioning policy (docs/about/versioning.md) calls public: ``conveyor.__all__`` with
each name's signature (classes: their public methods, properties and fields), the helpers in
``conveyor.testing`` and ``conveyor.web``, the CLI's commands with their arguments and options,
and the HTTP API's paths and methods. After a deliberate change, regenerate the snapshot and
review its diff::

    .venv/bin/python -m tests.unit.public_api --write
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

import typer.main

import conveyor
import conveyor.testing
import conveyor.web
from conveyor.cli import cli
from conveyor.web.apidoc import reference_schema

SNAPSHOT = Path(__file__).with_name("public_api.json")


def _signature(func: Any) -> str:
    """The signature as text, without the memory addresses of default objects."""
    try:
        text = str(inspect.signature(func))
    except (TypeError, ValueError):
        return "(?)"
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def _class(cls: type) -> dict[str, Any]:
    members: dict[str, Any] = {}
    if issubclass(cls, enum.Enum):
        return {"kind": "enum", "members": [f"{m.name}={m.value!r}" for m in cls]}
    if dataclasses.is_dataclass(cls):
        members["fields"] = [f.name for f in dataclasses.fields(cls)]
    for name, value in sorted(vars(cls).items()):
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(value, property):
            members[name] = "property"
        elif isinstance(value, staticmethod | classmethod):
            members[name] = _signature(value.__func__)
        elif inspect.isfunction(value):
            members[name] = _signature(value)
    bases = [base.__name__ for base in cls.__bases__]
    return {"kind": "class", "bases": bases, **members}


def _entry(obj: Any) -> Any:
    if inspect.isclass(obj):
        return _class(obj)
    if callable(obj):
        return {"kind": "function", "signature": _signature(obj)}
    return {"kind": type(obj).__name__}


def _cli() -> dict[str, Any]:
    root: Any = typer.main.get_command(cli)
    ctx = root.context_class(root, info_name="conveyor")
    commands = {"": root, **{name: root.get_command(ctx, name) for name in root.list_commands(ctx)}}
    return {name or "(root)": sorted(
        " ".join([*param.opts, *param.secondary_opts]) if param.param_type_name == "option"
        else f"<{param.name}>" for param in command.params) for name, command in commands.items()}


def _http() -> dict[str, list[str]]:
    return {path: sorted(methods) for path, methods in sorted(reference_schema()["paths"].items())}


def snapshot() -> dict[str, Any]:
    """The public API, as JSON-ready data in a stable order."""
    return {
        "conveyor.__all__": {name: _entry(getattr(conveyor, name))
                             for name in sorted(conveyor.__all__)},
        "conveyor.testing": {name: _entry(getattr(conveyor.testing, name))
                             for name in sorted(conveyor.testing.__all__)},
        "conveyor.web": {name: _entry(getattr(conveyor.web, name))
                         for name in sorted(conveyor.web.__all__)},
        "cli": _cli(),
        "http": _http(),
    }


def render() -> str:
    return json.dumps(snapshot(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SNAPSHOT.write_text(render(), encoding="utf-8")
        print(f"wrote {SNAPSHOT}")
    else:
        sys.stdout.write(render())
