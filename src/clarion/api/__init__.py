"""The HTTP edge: parse, validate, render each dialect's envelope and errors."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from clarion import jsontext

# FastAPI's answer when reading the body failed other than as a JSON syntax error: invalid
# UTF-8, a document nested deeper than the parser goes, a broken multipart form.
_BODY_UNREADABLE = "There was an error parsing the body"


def body_unreadable(exc: HTTPException) -> bool:
    """True for FastAPI's 400 for a body it could not parse: the dialects answer it as the
    bad input it is, in their own format, instead of as a bare HTTP error."""
    return exc.status_code == 400 and exc.detail == _BODY_UNREADABLE


class JsonRequest(Request):
    """A request whose JSON body is read by ``clarion.jsontext`` (no NaN or infinities, deep
    nesting a parse error), for the dialects' full routes as for their hot ones."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsontext.loads(await self.body())
        return self._json


def json_content_type(value: str | None) -> bool:
    """True for the content types whose body FastAPI reads as JSON (application/json, +json)."""
    if not value:
        return False
    kind = value.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )
