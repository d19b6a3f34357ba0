"""Sending: /push/message/send and /push/message/batch/send."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from clarion.api.powerauth import message_models as m
from clarion.api.powerauth.deps import ServicesDep
from clarion.api.powerauth.envelope import ObjectRequest, ObjectResponse, PowerAuthRoute, ok
from clarion.core.messages import MessageSpec, Mode, SendResult
from clarion.core.services import Services
from clarion.errors import InvalidRequest
from clarion.providers.base import Notification, Priority

router = APIRouter(route_class=PowerAuthRoute, tags=["Messages"])

MAX_EXTRAS_BYTES = 4096
# By value: an enum's call costs more than the rest of a field's conversion.
_PRIORITIES = {p.value: p for p in Priority}


def to_notification(
    body: m.MessageBody, priority: str = "HIGH", attributes: m.Attributes | None = None
) -> Notification:
    """The provider-neutral notification of a message body (also a campaign's message)."""
    extras = body.extras or {}
    if extras:
        # Counted as sent: UTF-8 bytes of compact JSON (escaped as \uXXXX, "é" counted 6).
        encoded = json.dumps(extras, separators=(",", ":"), ensure_ascii=False)
        if len(encoded.encode("utf-8", "surrogatepass")) > MAX_EXTRAS_BYTES:
            raise InvalidRequest(f"Push message extras must not exceed {MAX_EXTRAS_BYTES} bytes.")
    return Notification(
        title=body.title,
        title_loc_key=body.titleLocKey,
        title_loc_args=tuple(body.titleLocArgs) if body.titleLocArgs else (),
        body=body.body,
        body_loc_key=body.bodyLocKey,
        body_loc_args=tuple(body.bodyLocArgs) if body.bodyLocArgs else (),
        badge=body.badge,
        sound=body.sound,
        icon=body.icon,
        category=body.category,
        collapse_key=body.collapseKey,
        expires_at=body.validUntil,
        priority=_PRIORITIES[priority],
        # Once per message of a batch: no default Attributes model built for each.
        silent=attributes is not None and attributes.silent,
        extras=extras,
    )


def to_spec(message: m.Message) -> MessageSpec:
    attributes = message.attributes
    return MessageSpec(
        user_id=message.userId,
        activation_id=message.activationId,
        personal=attributes is not None and attributes.personal,
        notification=to_notification(message.body, message.priority, attributes),
    )


def counts(result: SendResult) -> dict[str, dict[str, int]]:
    """``{sent, pending, failed, total}`` per platform, under the seed's keys."""
    return {
        platform.seed_name: {
            "sent": c.sent,
            "pending": c.pending,
            "failed": c.failed,
            "total": c.total,
        }
        for platform, c in result.by_platform.items()
    }


def render(mode: Mode, result: SendResult | None) -> dict[str, Any]:
    if result is None:
        return ok({"mode": mode.value})
    return ok({"mode": mode.value, "result": counts(result)})


@router.post(
    "/push/message/send",
    response_model=ObjectResponse[m.SendResponse],
    response_model_exclude_none=True,
    summary="Send a message to a user (or one activation)",
)
async def send_message(request: ObjectRequest[m.SendRequest], svc: ServicesDep) -> Response:
    return await send_one(svc, request.requestObject)


async def send_one(svc: Services, body: m.SendRequest) -> Response:
    """Send one message (the FastAPI route and the hot route share it)."""
    mode = Mode(body.mode)
    result = await svc.messages.send(body.appId, [to_spec(body.message)], mode)
    # The hottest route: the answer is built here, not re-validated against its documented model.
    return JSONResponse(render(mode, result))


@router.post(
    "/push/message/batch/send",
    response_model=ObjectResponse[m.SendResponse],
    response_model_exclude_none=True,
    summary="Send a batch of messages",
)
async def send_batch(request: ObjectRequest[m.BatchRequest], svc: ServicesDep) -> Response:
    return await send_many(svc, request.requestObject)


async def send_many(svc: Services, body: m.BatchRequest) -> Response:
    """Send a batch (the FastAPI route and the hot route share it)."""
    mode = Mode(body.mode)
    result = await svc.messages.send(body.appId, [to_spec(x) for x in body.batch], mode)
    return JSONResponse(render(mode, result))
