"""The OpenAPI schema's generator-friendly shape says exactly what its union form said.

``JsonValue`` and the per-type params of ``EnqueueRequest`` are written with ``if``/``then``/
``else`` so that client generators can read them (see conveyor.web.openapi). These tests hold
them to the plain union form they replaced, value by value, with the validator schemathesis
uses: the API must accept and refuse exactly what it did.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import jsonschema_rs
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.web.openapi import JSON_VALUE, NO_NUL, build_schema, params_schema

_NO_NUL_TEXT = {"type": "string", "pattern": NO_NUL}
#: JsonValue as it was written before: a recursive union of the JSON types.
UNION_JSON_VALUE = {"anyOf": [
    {"type": ["null", "boolean"]},
    {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    {"type": "number", "not": {"type": "integer"}},
    _NO_NUL_TEXT,
    {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    {"type": "object", "propertyNames": _NO_NUL_TEXT,
     "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
]}

texts = st.text(alphabet=st.sampled_from("ab\x00é"), max_size=3)
numbers = st.one_of(st.integers(min_value=-(2**65), max_value=2**65),
                    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([1e30, -1e19, 9.2e18, 0.5]))
json_values = st.recursive(st.none() | st.booleans() | numbers | texts,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


def validator(schemas: dict[str, Any], name: str) -> Any:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}})


NEW_VALUE = validator({"JsonValue": JSON_VALUE}, "JsonValue")
OLD_VALUE = validator({"JsonValue": UNION_JSON_VALUE}, "JsonValue")


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_value_accepts_what_the_union_accepted(value: Any) -> None:
    assert NEW_VALUE.is_valid(value) == OLD_VALUE.is_valid(value), value


def test_json_value_still_refuses_the_values_the_core_refuses() -> None:
    for bad in ["a\x00", {"k\x00": 1}, [2**63], {"x": [[-(2**63) - 1]]}, 1e30]:
        assert not NEW_VALUE.is_valid(bad), bad
    good: Any
    for good in [None, True, -(2**63), 1.5, "é", [], {}, {"a": [1, {"b": None}]}]:
        assert NEW_VALUE.is_valid(good), good


def job(ctx: Any, a: int, b: int = 0) -> None: ...
def loose(ctx: Any, **extra: Any) -> None: ...
def optional(ctx: Any, n: int = 1) -> None: ...


TYPES = {"t.job": params_schema(inspect.signature(job)),
         "t.loose": params_schema(inspect.signature(loose)),
         "t.optional": params_schema(inspect.signature(optional))}


def union_enqueue_request(schemas: dict[str, Any]) -> dict[str, Any]:
    """EnqueueRequest as it was written before: a oneOf with one branch per job type."""
    request = copy.deepcopy(schemas["EnqueueRequest"])
    for key in ("if", "then", "else"):
        request.pop(key)
    request["oneOf"] = [
        {"properties": {"job_type": {"const": name}, "params": params},
         **({"required": ["params"]} if params.get("required") else {})}
        for name, params in sorted(TYPES.items())]
    return {**schemas, "EnqueueRequest": request}


SCHEMAS = build_schema(("pause",), TYPES)["components"]["schemas"]
NEW_REQUEST = validator(SCHEMAS, "EnqueueRequest")
OLD_REQUEST = validator(union_enqueue_request(SCHEMAS), "EnqueueRequest")
bodies = st.fixed_dictionaries(
    {"job_type": st.sampled_from([*TYPES, "t.unknown"])},
    optional={"params": st.dictionaries(st.sampled_from(["a", "b", "n", "z\x00"]), json_values,
                                        max_size=3),
              "delay": st.sampled_from([0, 5.5, -1])})


@settings(max_examples=150, deadline=None)
@given(bodies)
def test_enqueue_request_accepts_what_the_one_of_accepted(body: dict[str, Any]) -> None:
    assert NEW_REQUEST.is_valid(body) == OLD_REQUEST.is_valid(body), body


def test_enqueue_request_checks_each_types_params() -> None:
    assert NEW_REQUEST.is_valid({"job_type": "t.job", "params": {"a": 1}})
    assert not NEW_REQUEST.is_valid({"job_type": "t.job", "params": {"b": 1}})  # a is required
    assert not NEW_REQUEST.is_valid({"job_type": "t.job"})
    assert not NEW_REQUEST.is_valid({"job_type": "t.optional", "params": {"x": 1}})
    assert NEW_REQUEST.is_valid({"job_type": "t.optional"})
    assert NEW_REQUEST.is_valid({"job_type": "t.loose", "params": {"anything": [1]}})
    assert not NEW_REQUEST.is_valid({"job_type": "t.loose", "params": {"k\x00": 1}})
    assert not NEW_REQUEST.is_valid({"job_type": "t.unknown"})
