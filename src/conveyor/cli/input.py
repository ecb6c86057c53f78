"""What the command line reads from its user: the ``--app`` reference and the params.

Parsing failures become :class:`~conveyor.errors.ConveyorError` s, so the CLI prints one line
and the documented exit code instead of a traceback, whatever was typed.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor import payload
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError, InvalidParams


def load_app(ref: str) -> Conveyor:
    """Import ``package.module:attr`` (from the working folder too, as uvicorn and celery do)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"Malformed --app {ref!r}: expected package.module:attribute, e.g. myapp.jobs:app")
    folder = str(Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything; one line
        raise ConfigurationError(
            f"Cannot import {module_name!r} for --app: {type(exc).__name__}: {exc}"
            f"{_where(exc)}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"--app {ref!r}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not isinstance(target, Conveyor):
        raise ConfigurationError(
            f"--app {ref!r} is not a conveyor.Conveyor app (it is a {type(target).__name__!r})")
    return target


def _where(exc: BaseException) -> str:
    """`` (at file.py:12)``: where an import failed, since no traceback is shown."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    return f" (at {user[-1].filename}:{user[-1].lineno})" if user else ""


def parse_params(document: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    """``--params JSON`` then ``--param key=value`` on top (values JSON if they parse)."""
    values: dict[str, Any] = {}
    if document is not None:
        try:
            loaded = json.loads(document, parse_constant=_no_constant)
        except ValueError as exc:
            raise InvalidParams(f"--params is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidParams(_too_deep("--params")) from None
        if not isinstance(loaded, dict):
            raise InvalidParams("--params must be a JSON object, e.g. '{\"month\": \"2026-10\"}'")
        values.update(loaded)
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        if not equals or not key:
            raise InvalidParams(f"--param {pair!r} must look like key=value")
        try:
            values[key] = json.loads(raw, parse_constant=_no_constant)
        except ValueError:
            values[key] = raw
        except RecursionError:
            raise InvalidParams(_too_deep(f"--param {key}")) from None
    return values


def _too_deep(option: str) -> str:
    """The core's depth limit, said before the parser gives up on a deeper document."""
    return f"{option} nests deeper than {payload.MAX_DEPTH} levels (the limit for params)"


def _no_constant(name: str) -> object:
    """Refuse NaN and Infinity, which are not JSON: ``-p x=NaN`` is then the string "NaN"."""
    raise ValueError(f"{name} is not JSON")
