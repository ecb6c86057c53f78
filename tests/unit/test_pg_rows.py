"""The PostgreSQL store's jsonb loader: small flat objects read again are copies of one
decoding, never one dict shared by two jobs; anything else decodes afresh."""

from __future__ import annotations

from conveyor.stores.postgres import rows


def test_a_small_flat_object_read_again_is_a_copy_of_its_own() -> None:
    text = b'{"base": 1.0, "factor": 2.0, "n": 3, "on": true, "none": null, "s": "x"}'
    first = rows.json_loads(text)
    first["base"] = "changed by a job"
    second, third = rows.json_loads(text), rows.json_loads(memoryview(text))
    assert second == third == {"base": 1.0, "factor": 2.0, "n": 3, "on": True, "none": None,
                               "s": "x"}
    assert second is not third and rows._flat(text) == second


def test_a_text_read_again_is_kept_whatever_was_read_before_it() -> None:
    rows._flat.cache_clear()
    for n in range(1000):  # many other small objects first: the keep never stays full
        rows.json_loads(b'{"n": %d}' % n)
    common = b'{"retries": 3}'
    rows.json_loads(common)
    hits = rows._flat.cache_info().hits
    assert rows.json_loads(common) == {"retries": 3}
    assert rows._flat.cache_info().hits == hits + 1


def test_nested_large_and_non_object_values_are_decoded_each_time() -> None:
    nested, large = b'{"a": {"b": 1}}', b'{"a": "' + b"x" * 300 + b'"}'
    for text in (nested, large, b"[1, 2]", b"5", b'"s"'):
        assert rows.json_loads(text) == rows.json_loads(text.decode())
        if len(text) <= rows._FLAT_TEXT:
            assert rows._flat(text) is None
    one, two = rows.json_loads(nested), rows.json_loads(nested)
    one["a"]["b"] = 2
    assert two == {"a": {"b": 1}}
    assert rows.json_loads(b'{"big": 100000000000000000000}') == {"big": 1e20}
