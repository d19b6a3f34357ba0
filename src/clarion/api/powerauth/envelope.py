"""The PowerAuth envelope and error mapping, in one place for the whole dialect.

Requests are ``{"requestObject": {...}}``; answers are ``{"status": "OK", "responseObject": ...}``
or ``{"status": "ERROR", "responseObject": {"code": ..., "message": ...}}``. Every route of the
dialect uses ``PowerAuthRoute``, which turns validation failures and ``ClarionError``s into that
error body, and anything unexpected into a 500 with a generic message (detail only in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException

from clarion.api import JsonRequest, body_unreadable, json_content_type
from clarion.errors import (
    ClarionError,
    Conflict,
    DirectoryError,
    InvalidRequest,
    MessageNotFound,
    NotFound,
    Refused,
    Unauthorized,
)
from clarion.store.availability import (
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_OUTAGE,
    database_unavailable,
    first_line,
)

log = logging.getLogger("clarion.api.powerauth")

T = TypeVar("T")


def _reject_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters or unpaired surrogates: refuse them in any
    string, at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(InvalidRequest("Text fields must not contain NUL characters."))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # an unpaired surrogate (\ud800) from a JSON escape
            raise ValueError(InvalidRequest("Text fields must be valid Unicode.")) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)
    return value


NoNul = BeforeValidator(_reject_nul)


class ObjectRequest(BaseModel, Generic[T]):
    """The PowerAuth request envelope."""

    requestObject: Annotated[T, NoNul]


class OkResponse(BaseModel):
    status: Literal["OK"] = "OK"


class ObjectResponse(BaseModel, Generic[T]):
    status: Literal["OK"] = "OK"
    responseObject: T


class ErrorDetail(BaseModel):
    code: str = Field(examples=["ERROR_REQUEST"])
    message: str = Field(examples=["App ID must not be null."])


class ErrorResponse(BaseModel):
    model_config = ConfigDict(title="PowerAuthError")
    status: Literal["ERROR"] = "ERROR"
    responseObject: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request or business rule"},
    401: {"model": ErrorResponse, "description": "Admin credentials missing or wrong"},
}


def ok(response_object: Any = None) -> dict[str, Any]:
    if response_object is None:
        return {"status": "OK"}
    return {"status": "OK", "responseObject": response_object}


def error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"status": "ERROR", "responseObject": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


# Field labels and the messages upstream uses, so clients see familiar sentences.
_LABELS = {
    "appId": "App ID",
    "activationId": "Activation ID",
    "activationIds": "Activation IDs",
    "platform": "Platform",
    "environment": "Environment",
    "token": "Push token",
    "userId": "User ID",
    "activationStatus": "Activation status",
    "bundle": "Bundle",
    "keyId": "Key ID",
    "teamId": "Team ID",
    "privateKeyBase64": "Private key",
    "projectId": "Project ID",
    "clientId": "Client ID",
    "clientSecret": "Client secret",
    "message": "Push message",
    "body": "Push message payload (body)",
    "batch": "Push message batch",
    "includeIos": "includeIos",
}
_TYPE_NAMES = {
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "list",
    "int_type": "integer",
    "int_parsing": "integer",
    "dict_type": "JSON object",
    "model_type": "JSON object",
    "model_attributes_type": "JSON object",
}
_EXACT = {
    ("body", "null"): "Push message payload (body) must not be null.",
    ("message", "null"): "Push message must not be null.",
    ("token", "null"): "Push token must not be null or empty.",
    ("token", "empty"): "Push token must not be null or empty.",
}


def validation_message(errors: Sequence[Any]) -> str:
    """One clear sentence for the first validation error, naming the field (and, in a batch,
    the message's position)."""
    if not errors:
        return "Invalid request."
    err = errors[0]
    loc = list(err.get("loc", ()))
    if "batch" in loc:
        at = loc.index("batch") + 1
        if at < len(loc) and isinstance(loc[at], int):
            position = loc[at]
            if at + 1 == len(loc):  # the item itself: null, or not an object
                if err.get("input") is None:
                    return f"Push message at position {position} must not be null."
                return f"Push message at position {position} must be a JSON object."
            # Read as the single send's message is, then placed; a path names the batch item.
            message = _field_message(
                {**err, "loc": ["requestObject", "message", *loc[at + 1 :]]},
                path=_path(loc),
            )
            if message.startswith("Push message "):
                return f"Push message at position {position} {message[13:]}"
            return f"Push message at position {position}: {message}"
    return _field_message(err)


def _path(loc: Sequence[Any]) -> str:
    """``requestObject.batch[1].body.badge``: where a field is, as a JSON path."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query") else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + str(part)
    return text


def _field_message(err: Any, *, path: str | None = None) -> str:
    kind = str(err.get("type", ""))
    loc = list(err.get("loc", ()))
    if loc and loc[0] in ("body", "query"):  # where FastAPI found it, not a field
        loc = loc[1:]
    if kind in ("json_invalid", "json_type"):
        return "Request body is not valid JSON."
    if not loc:
        if kind == "missing":
            return "Request body must not be empty."
        return "Request body must be a JSON object with a requestObject."
    if loc == ["requestObject"] and kind in ("missing", "model_type", "model_attributes_type"):
        if kind == "missing" or err.get("input") is None:
            return "Request object must not be null."
        return "Request object must be a JSON object."
    field = str(next((p for p in reversed(loc) if isinstance(p, str)), loc[-1]))
    label = _LABELS.get(field, field)
    if field == "body" and loc.count("body") > 1:
        label = "body"  # the text field inside the payload, not the payload itself
    if kind == "missing" or (err.get("input") is None and kind.endswith("_type")):
        if field == "userId" and ("message" in loc or "batch" in loc):
            return "Push message must contain a user ID."
        return _EXACT.get((field, "null"), f"{label} must not be null.")
    if kind == "string_too_short":
        return _EXACT.get((field, "empty"), f"{label} must not be empty.")
    if kind == "too_short":
        return f"{label} must not be empty."
    if kind == "string_too_long":
        return f"{label} is too long."
    if kind in _TYPE_NAMES:
        what = (
            "contain only " + _TYPE_NAMES[kind] + "s"
            if isinstance(loc[-1], int)
            else ("be an " if _TYPE_NAMES[kind][0] in "aeiou" else "be a ") + _TYPE_NAMES[kind]
        )
        return f"{label} must {what}."
    if kind.startswith(("datetime_", "date_")):
        return (
            f"{label} must be an ISO 8601 date and time (2026-12-01T12:00:00Z) or a Unix time "
            "in seconds or milliseconds."
        )
    if kind == "extra_forbidden":
        return f"Unknown field: {str(field)[:40]}."
    if kind == "value_error":
        ctx = err.get("ctx") or {}
        reason = ctx.get("error")
        if isinstance(reason, ValueError) and reason.args:
            reason = reason.args[0]
        if isinstance(reason, ClarionError):
            return reason.message
    return f"Invalid value of {path or _path(loc)}: {err.get('msg', 'invalid')}."


def map_error(exc: Exception) -> JSONResponse:
    """The single mapping from clarion's errors to the dialect's error bodies."""
    if isinstance(exc, RequestValidationError):
        return error(400, "ERROR_REQUEST", validation_message(exc.errors()))
    if isinstance(exc, InvalidRequest):
        return error(400, "ERROR_REQUEST", exc.message)
    if isinstance(exc, MessageNotFound):
        return error(400, "ERROR_MESSAGE_NOT_FOUND", exc.message)
    if isinstance(exc, NotFound | Conflict | Refused):
        return error(400, "ERROR_GENERIC", exc.message)
    if isinstance(exc, DirectoryError):
        return error(400, "ERROR_PA_SERVER_COMM", exc.message)
    if isinstance(exc, Unauthorized):
        challenge = {"WWW-Authenticate": exc.challenge} if exc.challenge else None
        return error(401, "ERROR_UNAUTHORIZED", exc.message, headers=challenge)
    if isinstance(exc, ClarionError):
        log.error("request failed: %s", exc.message)
        return error(500, "ERROR_GENERIC", "The request could not be processed.")
    if database_unavailable(exc):
        log.warning("request not served, the database is unavailable: %s", first_line(exc))
        response = error(503, "ERROR_GENERIC", DATABASE_UNAVAILABLE)
        response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
        return response
    log.exception("unexpected error while handling a PowerAuth request")
    return error(500, "ERROR_GENERIC", "Internal server error. The detail is in the server log.")


class PowerAuthRoute(APIRoute):
    """A route whose every failure is answered in the PowerAuth error format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declared = _query_names(self.dependant)

        async def guarded(request: Request) -> Response:
            repeated = _repeated_parameter(request, declared) if declared else None
            if repeated is not None:
                # The last one was taken: DELETE /admin/app/apns?appId=a&appId=b removed b's
                # credentials. Spring would join them into one value no application has.
                return error(
                    400, "ERROR_REQUEST", f"Query parameter {repeated} is given more than once."
                )
            try:
                return await handler(JsonRequest(request.scope, request.receive))
            except HTTPException as exc:
                if body_unreadable(exc):
                    return error(400, "ERROR_REQUEST", "Request body is not valid JSON.")
                raise
            except RequestValidationError as exc:
                content_type = request.headers.get("content-type")
                if not json_content_type(content_type) and any(
                    tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing"
                    for e in exc.errors()
                ):
                    # The body was never read as JSON: saying it is not a JSON object would
                    # mislead a caller whose JSON went out as curl's default form type.
                    return error(400, "ERROR_REQUEST", _not_json_message(content_type))
                return map_error(exc)
            except Exception as exc:  # every other failure gets the dialect's error body
                return map_error(exc)

        return guarded


def _not_json_message(content_type: str | None) -> str:
    sent = content_type.partition(";")[0].strip()[:80] if content_type else ""
    return "Request body must be JSON sent with Content-Type: application/json" + (
        f" (this request's is {sent})." if sent else " (this request has none)."
    )


def _query_names(dependant: Any) -> frozenset[str]:
    """The query parameters a route reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return frozenset(names)


def _repeated_parameter(request: Request, declared: frozenset[str]) -> str | None:
    """A parameter the route reads that the query gives more than once (others are ignored,
    as unknown ones are)."""
    if not request.scope.get("query_string"):
        return None
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in declared:
            if name in seen:
                return name
            seen.add(name)
    return None


def add_routes(
    router: Any,
    endpoint: Callable[..., Any],
    forms: Sequence[tuple[str, str]],
    **options: Any,
) -> None:
    """One handler under several (method, path) forms; the first (the seed's) is documented
    first, the official Java client's aliases after it."""
    for index, (method, path) in enumerate(forms):
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            operation_id=f"{endpoint.__name__}_{index}" if index else endpoint.__name__,
            **options,
        )
