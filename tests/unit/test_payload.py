"""Unit tests of strict JSON payload validation (params, checkpoints, results)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import payload
from conveyor.errors import ConveyorError, InvalidParams, PayloadTooLarge
from conveyor.payload import MAX_BYTES, MAX_DEPTH, validate, validate_object

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def nested_lists(levels: int, leaf: Any = 0) -> Any:
    """``levels`` lists inside one another, the innermost holding ``leaf``."""
    value: Any = [leaf]
    for _ in range(levels - 1):
        value = [value]
    return value


def nested_objects(levels: int, leaf: Any = 0) -> Any:
    value: Any = {"a": leaf}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --------------------------------------------------------------------------------------------
# accepted values


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        1.5,
        -0.0,
        1e308,
        "",
        "héllo wörld ☃ 🚀",
        [],
        {},
        [1, "two", 3.0, None, True, [], {}],
        {"a": {"b": [1, {"c": [None, False, "x"]}]}, "d": -7.25, "e": ""},
    ],
    ids=repr,
)
def test_valid_values_accepted_and_round_trip(value: Any) -> None:
    encoded = validate(value)
    assert isinstance(encoded, str)
    assert json.loads(encoded) == value
    assert payload.loads(payload.dumps(value)) == value


def test_encoding_is_compact_and_keeps_unicode() -> None:
    assert validate({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'
    assert payload.dumps({"a": [1, 2]}) == '{"a":[1,2]}'


def test_loads_of_none_is_none() -> None:
    assert payload.loads(None) is None
    assert payload.loads(b'{"x":1}') == {"x": 1}


def test_validate_object_returns_the_same_dict() -> None:
    params = {"month": "2026-10", "ids": [1, 2, 3]}
    assert validate_object(params) is params


# --------------------------------------------------------------------------------------------
# non-finite floats


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=repr)
def test_non_finite_floats_rejected_with_path(bad: float) -> None:
    with pytest.raises(InvalidParams) as info:
        validate({"a": [1, bad]})
    message = str(info.value)
    assert "$.a[1]" in message
    assert repr(bad) in message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=repr)
def test_non_finite_floats_rejected_at_top_level(bad: float) -> None:
    with pytest.raises(InvalidParams, match=r"at \$,"):
        validate(bad)


# --------------------------------------------------------------------------------------------
# NUL characters


def test_nul_in_value_rejected() -> None:
    with pytest.raises(InvalidParams, match=re.escape("$.a.b")):
        validate({"a": {"b": "x\u0000y"}})


def test_nul_in_list_item_rejected() -> None:
    with pytest.raises(InvalidParams, match=re.escape("$[2]")):
        validate(["ok", "ok", "\u0000"])


def test_nul_in_key_rejected() -> None:
    with pytest.raises(InvalidParams, match="NUL") as info:
        validate({"outer": {"k\u0000": 1}})
    assert "$.outer" in str(info.value)


def test_nul_in_top_level_key_rejected() -> None:
    with pytest.raises(InvalidParams):
        validate_object({"\u0000": "v"})


# --------------------------------------------------------------------------------------------
# 64-bit integers


@pytest.mark.parametrize("good", [INT64_MAX, INT64_MIN, 0, -1, 2**53 + 1])
def test_int64_range_accepted(good: int) -> None:
    assert json.loads(validate({"n": good})) == {"n": good}


@pytest.mark.parametrize("bad", [2**63, INT64_MIN - 1, 10**30, -(10**30)])
def test_integers_outside_int64_rejected(bad: int) -> None:
    with pytest.raises(InvalidParams, match="64-bit") as info:
        validate({"n": [bad]})
    assert "$.n[0]" in str(info.value)


def test_bools_are_not_treated_as_out_of_range_ints() -> None:
    assert validate([True, False]) == "[true,false]"


# --------------------------------------------------------------------------------------------
# nesting


@pytest.mark.parametrize("build", [nested_lists, nested_objects])
def test_nesting_64_deep_accepted(build: Any) -> None:
    value = build(MAX_DEPTH)
    assert json.loads(validate(value)) == value


@pytest.mark.parametrize("build", [nested_lists, nested_objects])
def test_nesting_65_deep_rejected(build: Any) -> None:
    with pytest.raises(InvalidParams, match="deeper than 64"):
        validate(build(MAX_DEPTH + 1))


@pytest.mark.parametrize("build", [nested_lists, nested_objects])
def test_nesting_5000_deep_rejected_without_recursion_error(build: Any) -> None:
    value = build(5000)
    # json itself would blow the recursion limit on this; we must refuse it first
    with pytest.raises(InvalidParams, match="deeper than 64"):
        validate(value)


@pytest.mark.parametrize("empty", [[], {}], ids=["list", "object"])
def test_nesting_65_deep_rejected_with_empty_innermost_container(empty: Any) -> None:
    value: Any = empty
    for _ in range(MAX_DEPTH):  # 1 + 64 = 65 levels of containers
        value = [value]
    with pytest.raises(InvalidParams):
        validate(value)


def test_max_depth_is_64() -> None:
    assert MAX_DEPTH == 64


# --------------------------------------------------------------------------------------------
# non-JSON types


@pytest.mark.parametrize(
    "key",
    [1, 1.5, None, True, (1, 2)],
    ids=["int", "float", "None", "bool", "tuple"],
)
def test_non_string_keys_rejected(key: Any) -> None:
    with pytest.raises(InvalidParams, match="non-string key") as info:
        validate({"outer": {key: "v"}})
    assert "$.outer" in str(info.value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (b"bytes", "bytes"),
        (bytearray(b"x"), "bytearray"),
        (datetime(2026, 1, 1, tzinfo=UTC), "datetime"),
        (date(2026, 1, 1), "date"),
        (Decimal("1.5"), "Decimal"),
        (1 + 2j, "complex"),
        (object(), "object"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_non_json_types_rejected(value: Any, type_name: str) -> None:
    with pytest.raises(InvalidParams) as info:
        validate({"x": [value]})
    message = str(info.value)
    assert type_name in message
    assert "$.x[0]" in message


def test_custom_object_rejected() -> None:
    class Point:
        pass

    with pytest.raises(InvalidParams, match="Point"):
        validate_object({"p": Point()})


def test_label_appears_in_message() -> None:
    with pytest.raises(InvalidParams, match=r"^result hold"):
        validate({"x": math.nan}, what="result")


# --------------------------------------------------------------------------------------------
# size


def test_payload_exactly_at_limit_accepted() -> None:
    overhead = len('{"k":""}')
    value = {"k": "x" * (MAX_BYTES - overhead)}
    assert len(validate(value).encode()) == MAX_BYTES


def test_payload_just_under_limit_accepted() -> None:
    overhead = len('{"k":""}')
    value = {"k": "x" * (MAX_BYTES - overhead - 1)}
    assert len(validate(value).encode()) == MAX_BYTES - 1


def test_payload_just_over_limit_rejected() -> None:
    overhead = len('{"k":""}')
    value = {"k": "x" * (MAX_BYTES - overhead + 1)}
    with pytest.raises(PayloadTooLarge) as info:
        validate(value)
    assert str(MAX_BYTES + 1) in str(info.value)
    assert str(MAX_BYTES) in str(info.value)


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    # 2 bytes per character: under the limit in characters, over it in bytes
    value = "é" * (MAX_BYTES // 2)
    assert len(json.dumps(value, ensure_ascii=False)) < MAX_BYTES
    with pytest.raises(PayloadTooLarge):
        validate(value)


def test_payload_too_large_is_invalid_params() -> None:
    assert issubclass(PayloadTooLarge, InvalidParams)
    assert issubclass(InvalidParams, ConveyorError)
    with pytest.raises(InvalidParams):
        validate_object({"k": "x" * MAX_BYTES})


# --------------------------------------------------------------------------------------------
# validate_object


@pytest.mark.parametrize(
    ("value", "type_name"),
    [([1, 2], "list"), ("s", "str"), (None, "NoneType"), (3, "int"), ((1,), "tuple")],
    ids=["list", "str", "None", "int", "tuple"],
)
def test_validate_object_rejects_non_dicts(value: Any, type_name: str) -> None:
    with pytest.raises(InvalidParams, match=f"must be a JSON object, not {type_name}$"):
        validate_object(value)


def test_validate_object_validates_contents() -> None:
    with pytest.raises(InvalidParams, match=re.escape("$.when")):
        validate_object({"when": datetime(2026, 1, 1, tzinfo=UTC)})


def test_validate_object_label() -> None:
    with pytest.raises(InvalidParams, match=r"^checkpoint must be a JSON object"):
        validate_object([], what="checkpoint")


# --------------------------------------------------------------------------------------------
# lone surrogates


@pytest.mark.parametrize("value", ["\ud800", {"\udfff": 1}], ids=["value", "key"])
def test_lone_surrogate_rejected_as_invalid_params(value: Any) -> None:
    with pytest.raises(InvalidParams):
        validate(value)


# --------------------------------------------------------------------------------------------
# property: every strict JSON value validates and round-trips

# codec="utf-8" leaves out lone surrogates (not encodable text; refused, see above)
text_without_nul = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text_without_nul
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(text_without_nul, children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(json_values)
def test_valid_json_always_validates_and_round_trips(value: Any) -> None:
    encoded = validate(value)
    assert json.loads(encoded) == value
    assert encoded == payload.dumps(value)


@settings(max_examples=100)
@given(st.dictionaries(text_without_nul, json_values, max_size=5))
def test_valid_objects_pass_validate_object(value: dict[str, Any]) -> None:
    assert validate_object(value) is value
    assert json.loads(validate(value)) == value


@settings(max_examples=100)
@given(json_values, st.sampled_from([math.nan, math.inf, -math.inf]))
def test_one_non_finite_float_anywhere_is_rejected(value: Any, bad: float) -> None:
    with pytest.raises(InvalidParams):
        validate({"good": value, "bad": [value, bad]})
