"""The HTTP API reference in Markdown, generated from the OpenAPI schema.

``docs/http-api.md`` holds a hand-written introduction and, between two markers, the output of
:func:`render_reference`. A test fails when the two differ, so the reference cannot drift from
the schema (which schemathesis holds to the code). Regenerate it with::

    python -m conveyor.web.apidoc docs/http-api.md
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conveyor.web.api import CONTROL_ACTIONS
from conveyor.web.openapi import build_schema

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m conveyor.web.apidoc docs/http-api.md) -->"
END = "<!-- END GENERATED REFERENCE -->"
_METHOD_ORDER = ("get", "post")


def reference_schema() -> dict[str, Any]:
    """The schema the docs describe: that of an app without job types (no per-type enum)."""
    return build_schema(CONTROL_ACTIONS, {})


def _type_of(schema: dict[str, Any]) -> str:
    """A short, human reading of a JSON Schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type_of(part) for part in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any JSON")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "format" in schema:
        kind = f"{kind} ({schema['format']})"
    bounds = [f"{word} {_number(schema[key])}" for key, word in
              (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
              if key in schema]
    if "minLength" in schema:
        bounds.append(f"{schema['minLength']} to {schema.get('maxLength', 'any')} chars")
    elif "maxLength" in schema:
        bounds.append(f"≤ {schema['maxLength']} chars")
    return f"{kind}, {' '.join(bounds)}" if bounds else str(kind)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parameters(operation: dict[str, Any]) -> list[str]:
    params = operation.get("parameters", [])
    if not params:
        return []
    lines = ["", "| parameter | in | type | description |", "|---|---|---|---|"]
    for param in params:
        required = " (required)" if param.get("required") else ""
        lines.append(f"| `{param['name']}`{required} | {param['in']} | "
                     f"{_cell(_type_of(param['schema']))} | "
                     f"{_cell(param.get('description', ''))} |")
    return lines


def _body(operation: dict[str, Any]) -> list[str]:
    body = operation.get("requestBody")
    if body is None:
        return []
    schema = body["content"]["application/json"]["schema"]
    optional = "" if body.get("required") else " (optional)"
    return ["", f"Body{optional}: JSON, {_type_of(schema)}."]


def _responses(operation: dict[str, Any]) -> list[str]:
    lines = ["", "| status | meaning | body |", "|---|---|---|"]
    for status, response in sorted(operation["responses"].items()):
        content = response.get("content", {})
        body = ", ".join(f"{_type_of(c['schema'])} ({media})" for media, c in content.items())
        lines.append(f"| {status} | {_cell(response['description'])} | {_cell(body)} |")
    return lines


def _component(name: str, schema: dict[str, Any]) -> list[str]:
    lines = ["", f"### {name}", ""]
    if "properties" not in schema:
        return [*lines, schema.get("description") or f"{_type_of(schema)}."]
    required = set(schema.get("required", []))
    lines += ["| field | type | notes |", "|---|---|---|"]
    for field, spec in schema["properties"].items():
        notes = "required" if field in required else "optional"
        if spec.get("description"):
            notes += f"; {spec['description']}"
        lines.append(f"| `{field}` | {_cell(_type_of(spec))} | {_cell(notes)} |")
    if "not" in schema:
        lines += ["", f"Not both of: {', '.join(schema['not']['required'])}."]
    return lines


def render_reference(schema: dict[str, Any] | None = None) -> str:
    """Every path and schema of the API, as Markdown."""
    schema = schema or reference_schema()
    lines = ["## Endpoints"]
    for path, item in schema["paths"].items():
        for method in sorted(item, key=_METHOD_ORDER.index):
            operation = item[method]
            lines += ["", f"### `{method.upper()} {path}`", "", f"{operation['summary']}."]
            if operation.get("description"):
                lines += ["", operation["description"]]
            lines += _parameters(operation) + _body(operation) + _responses(operation)
    lines += ["", "## Schemas"]
    for name, component in schema["components"]["schemas"].items():
        lines += _component(name, component)
    return "\n".join(lines) + "\n"


def rewrite(doc: Path) -> bool:
    """Replace the generated part of ``doc``; returns whether anything changed."""
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{render_reference()}{END}{tail}"
    if new != text:
        doc.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/http-api.md"))
    print("updated" if changed else "already up to date")
