"""JSON that comes from outside (request bodies, blobs, tokens, uploaded files, providers'
answers), parsed so that every way it can be malformed is a ValueError.

``json.loads`` raises ``RecursionError`` for a document nested deeper than the interpreter's
recursion limit (a few kilobytes of ``[``), which handlers that catch ValueError let through
as a 500; invalid UTF-8 is already a ValueError (UnicodeDecodeError).
"""

from __future__ import annotations

import json
from typing import Any


def loads(document: str | bytes | bytearray) -> Any:
    """``json.loads``, with a document nested too deeply reported as a ValueError."""
    try:
        return json.loads(document)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
