"""clarion.jsontext.loads: json.loads for documents from outside, every malformation a
ValueError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion import jsontext

documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(documents)
def test_reads_what_json_reads(value: object) -> None:
    text = json.dumps(value)
    assert jsontext.loads(text) == json.loads(text)
    for encoding in ("utf-8", "utf-16", "utf-32"):
        assert jsontext.loads(text.encode(encoding)) == json.loads(text.encode(encoding))


@pytest.mark.parametrize(
    "document",
    [
        "NaN",
        '{"a": Infinity}',
        "[-Infinity]",
        "[" * 100_000 + "]" * 100_000,
        b'{"a": "\xff"}',
        "",
        "{",
        '{"n": 1e400}',  # valid JSON, but json.loads makes it inf and json.dumps "Infinity"
        "[-1E+999]",
    ],
    ids=[
        "nan",
        "infinity",
        "-infinity",
        "deep",
        "not-utf8",
        "empty",
        "truncated",
        "overflow",
        "-overflow",
    ],
)
def test_every_malformed_document_is_a_value_error(document: str | bytes) -> None:
    with pytest.raises(ValueError):
        jsontext.loads(document)
