"""JSON that comes from outside (request bodies, blobs, tokens, uploaded files, providers'
answers), parsed so that every way it can be malformed is a ValueError.

``json.loads`` raises ``RecursionError`` for a document nested deeper than the interpreter's
recursion limit (a few kilobytes of ``[``), which handlers that catch ValueError let through
as a 500, and it accepts ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON: stored
in PostgreSQL's json type they fail, and passed on to a provider they make its payload
invalid. A number too large for a float (``1e400``) is valid JSON but would become the float
infinity and be written out as ``Infinity``: it is refused too. Invalid UTF-8 is already a
ValueError (UnicodeDecodeError).
"""

from __future__ import annotations

import json
import math
from typing import Any


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range for a JSON number here")
    return value


# One decoder for every call: json.loads with any option builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def loads(document: str | bytes | bytearray) -> Any:
    """``json.loads`` without NaN, the infinities and numbers that overflow a float, with a
    document nested too deeply reported as a ValueError."""
    if not isinstance(document, str):
        document = document.decode(json.detect_encoding(document), "surrogatepass")
    try:
        return _DECODER.decode(document)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
