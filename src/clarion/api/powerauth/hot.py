"""The PowerAuth hot routes: sends, device registration, the inbox reads, the query form of
"mark read" and the service status (see ``clarion.api.hot``).

A route with a ``{"requestObject": ...}`` body takes it when it validates against the same
``ObjectRequest[T]`` model as the FastAPI route, and calls the same function.

Each handler takes the query string only in its plain form (every parameter once, texts within
the lengths of the route's ``Query`` annotations and free of NUL, ``onlyUnread`` exactly ``true``
or ``false``, ``page`` and ``size`` ASCII digits) and otherwise returns None, so that the FastAPI
route answers, with its validation sentence. A plain request is answered by calling the FastAPI
route's own function and rendering its dict as FastAPI renders a response model (pydantic's JSON
serializer, compact, UTF-8), so the bytes are the same; errors from the core go through the
dialect's ``map_error`` as ``PowerAuthRoute`` sends them. ``tests/integration/
test_inbox_hot_routes.py`` compares the two answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.responses import Response

from clarion.api.hot import HotRequest, HotRoute
from clarion.api.powerauth import devices, inbox, messages, status
from clarion.api.powerauth import message_models as m
from clarion.api.powerauth.envelope import ObjectRequest, map_error
from clarion.api.powerauth.models import CreateDeviceRequest
from clarion.core.services import Services

B = TypeVar("B", bound=BaseModel)

# The ``Query`` annotations of the FastAPI routes (inbox.py).
_USER_ID_MAX = 255
_APP_ID_MAX = 255
_MESSAGE_ID_MAX = 64
_APPLICATIONS_MAX = 100 * 256
_INT_DIGITS_MAX = 18  # a longer number is not a plain page or size: the full route decides


def _text(value: str | None, max_length: int, *, min_length: int = 1) -> str | None:
    """``value`` if the route's annotation accepts it as it stands, else None."""
    if value is None or not min_length <= len(value) <= max_length or "\x00" in value:
        return None
    if min_length and value.isspace():  # blank: the full route refuses it
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # an unpaired surrogate: NoNul refuses it
            return None
    return value


def _number(value: str | None, default: int) -> int | None:
    """A page or size: absent is the default; plain ASCII digits are the number; else None."""
    if value is None:
        return default
    if not value or len(value) > _INT_DIGITS_MAX or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _json(body: dict[str, Any]) -> Response:
    """The body as FastAPI sends a response model's (its fast path: pydantic's ``dump_json``)."""
    return Response(to_json(body), media_type="application/json")


async def _answer(body: Awaitable[dict[str, Any] | Response]) -> Response:
    """The route function's answer (``body``, not yet awaited), or its error's."""
    try:
        answer = await body
    except Exception as exc:  # as PowerAuthRoute: the dialect's error body
        return map_error(exc)
    return answer if isinstance(answer, Response) else _json(answer)


def object_route(
    method: str,
    path: str,
    model: type[B],
    action: Callable[[Services, B], Awaitable[dict[str, Any] | Response]],
) -> HotRoute:
    """A route whose body is ``{"requestObject": <model>}``, answered by ``action``."""
    adapter: TypeAdapter[ObjectRequest[Any]] = TypeAdapter(ObjectRequest[model])  # type: ignore[valid-type]

    async def handler(request: HotRequest) -> Response | None:
        data = request.json()
        if data is None:
            return None
        try:
            body = adapter.validate_python(data).requestObject
        except ValidationError:
            return None
        return await _answer(action(request.services, body))

    return HotRoute(method, path, handler)


def _optional(
    query: dict[str, str], key: str, max_length: int, min_length: int
) -> tuple[bool, str | None]:
    """(plain, value) of an optional parameter: absent is plain None."""
    value = query.get(key)
    if value is None:
        return True, None
    checked = _text(value, max_length, min_length=min_length)
    return checked is not None, checked


async def list_messages(request: HotRequest) -> Response | None:
    """``GET /inbox/messages/list``."""
    query = request.query()
    if query is None:
        return None
    user_id = _text(query.get("userId"), _USER_ID_MAX)
    plain_applications, applications = _optional(query, "applications", _APPLICATIONS_MAX, 0)
    only_unread = query.get("onlyUnread", "false")
    page = _number(query.get("page"), 0)
    size = _number(query.get("size"), 100)
    if user_id is None or not plain_applications or page is None or size is None:
        return None
    if only_unread not in ("true", "false"):
        return None  # pydantic also takes yes, 1, TRUE, on...: the full route decides
    return await _answer(
        inbox.list_messages(
            request.services,
            user_id,
            applications,
            onlyUnread=only_unread == "true",
            page=page,
            size=size,
        )
    )


async def count_unread(request: HotRequest) -> Response | None:
    """``GET /inbox/messages/count``."""
    query = request.query()
    if query is None:
        return None
    user_id = _text(query.get("userId"), _USER_ID_MAX)
    app_id = _text(query.get("appId"), _APP_ID_MAX)
    if user_id is None or app_id is None:
        return None
    return await _answer(inbox.count_unread(request.services, user_id, app_id))


async def message_detail(request: HotRequest) -> Response | None:
    """``GET /inbox/messages/detail``."""
    query = request.query()
    if query is None:
        return None
    plain_message_id, message_id = _optional(query, "messageId", _MESSAGE_ID_MAX, 0)
    plain_id, id_ = _optional(query, "id", _MESSAGE_ID_MAX, 0)
    plain_user_id, user_id = _optional(query, "userId", _USER_ID_MAX, 1)
    if not (plain_message_id and plain_id and plain_user_id):
        return None
    return await _answer(
        inbox.message_detail(request.services, messageId=message_id, id=id_, userId=user_id)
    )


async def read_message(request: HotRequest) -> Response | None:
    """``PUT /inbox/messages/read`` with the user and message in the query (any body ignored,
    as the FastAPI route ignores it)."""
    query = request.query()
    if query is None:
        return None
    user_id = _text(query.get("userId"), _USER_ID_MAX)
    plain_message_id, message_id = _optional(query, "messageId", _MESSAGE_ID_MAX, 0)
    if user_id is None or not plain_message_id:
        return None
    return await _answer(inbox.read_message_by_query(request.services, user_id, message_id))


async def service_status(request: HotRequest) -> Response:
    """``GET /push/service/status`` (no parameters: every form is plain)."""
    return await _answer(status.service_status(request.services))


ROUTES = (
    object_route("POST", "/push/message/send", m.SendRequest, messages.send_one),
    object_route("POST", "/push/message/batch/send", m.BatchRequest, messages.send_many),
    object_route("POST", "/push/device/create", CreateDeviceRequest, devices.register_one),
    HotRoute("GET", "/inbox/messages/list", list_messages),
    HotRoute("GET", "/inbox/messages/count", count_unread),
    HotRoute("GET", "/inbox/messages/detail", message_detail),
    HotRoute("PUT", "/inbox/messages/read", read_message),
    HotRoute("GET", "/push/service/status", service_status),
)
