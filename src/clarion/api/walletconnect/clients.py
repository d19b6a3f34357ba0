"""Health, the rate-limit probe, clients and pushes: /health, /clients, /{tenant_id}/clients."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import Counter

from clarion import __version__
from clarion.api.walletconnect import models
from clarion.api.walletconnect.errors import (
    FailedBody,
    OkBody,
    WalletConnectRoute,
    failed,
    ok,
)
from clarion.api.walletconnect.guards import (
    RateLimit,
    RelaySignature,
    ServicesDep,
    check_client_jwt,
)
from clarion.api.walletconnect.models import PushRequest, RawPush, RegisterClient
from clarion.core import walletconnect as wc
from clarion.core.services import Services
from clarion.core.tenants import check_tenant_id

router = APIRouter(route_class=WalletConnectRoute, tags=["WalletConnect"])

ClientId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]*$")]
TenantId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]*$")]


@router.get("/health", response_class=PlainTextResponse, summary="Health")
async def health() -> str:
    return f"OK, clarion v{__version__}"


# HEAD too (undocumented, as everywhere a GET is): load balancers' health checks send it.
router.add_api_route(
    "/health",
    health,
    methods=["HEAD"],
    response_class=PlainTextResponse,
    include_in_schema=False,
)


@router.get(
    "/rate_limit_test",
    response_model=OkBody,
    dependencies=[RateLimit],
    summary="Rate limit probe (for clients' tests)",
)
async def rate_limit_test() -> Response:
    return ok()


async def _register(
    request: Request, svc: ServicesDep, tenant_id: str, body: RegisterClient
) -> Response:
    check_client_jwt(request, svc, body.client_id)
    await svc.walletconnect.register(
        wc.Registration(
            tenant_id=tenant_id,
            client_id=body.client_id,
            push_type=wc.parse_push_type(body.type),
            token=body.token,
            always_raw=bool(body.always_raw),
        )
    )
    return ok()


async def _unregister(request: Request, svc: ServicesDep, tenant_id: str, id: str) -> Response:
    check_client_jwt(request, svc, id)
    await svc.walletconnect.unregister(tenant_id, id)
    return ok()


async def push_to(svc: Services, tenant_id: str, id: str, body: PushRequest) -> Response:
    """Push to client ``id`` of the tenant: the FastAPI routes and the hot route share it."""
    if isinstance(body, RawPush):
        raw = wc.RawPayload(body.topic, body.tag, body.message)
        payload: wc.Payload | wc.RawPayload = raw
        message_id = body.id or wc.raw_message_id(raw)
    else:
        sent = body.payload
        if isinstance(sent, models.RawPayload):
            payload = wc.RawPayload(sent.topic, sent.tag, sent.message)
        else:
            payload = wc.Payload(sent.topic, sent.flags, sent.blob)
        message_id = body.id
    result = await svc.walletconnect.push(
        wc.Push(tenant_id=tenant_id, client_id=id, message_id=message_id, payload=payload)
    )
    return render_push(result)


PUSHES = Counter(
    "clarion_wc_pushes_total",
    "WalletConnect relay pushes answered, by result (sent, duplicate, unknown_client, ...).",
    ["result"],
)
_PUSH_RESULTS = {status: PUSHES.labels(status.value) for status in wc.PushStatus}


def render_push(result: wc.PushResult) -> JSONResponse:
    """The answer for each push result (see the table in docs/walletconnect.md)."""
    status, reason = result.status, result.reason or ""
    _PUSH_RESULTS[status].inc()
    if status in (wc.PushStatus.SENT, wc.PushStatus.DUPLICATE):
        return ok()
    if status is wc.PushStatus.UNKNOWN_CLIENT:
        return ok(202)  # the client left: the relay must not retry
    if status is wc.PushStatus.CLIENT_DELETED:
        return failed(202, errors=[("client_deleted", "The device token is no longer valid.")])
    if status is wc.PushStatus.TENANT_SUSPENDED:
        return failed(202, errors=[("tenant_suspended", reason)])
    if status is wc.PushStatus.BAD_BLOB:
        return failed(202, errors=[("json", reason)], fields=[("payload.blob", reason, "body")])
    if status is wc.PushStatus.RETRY:
        wait = max(1, math.ceil(result.retry_after or 1))
        return failed(
            503,
            errors=[("provider_unavailable", reason or "The push service asked to retry.")],
            headers={"Retry-After": str(wait)},
        )
    return failed(202, errors=[("push_failed", reason or "The push service refused it.")])


PUSH_RESPONSES: dict[int | str, dict[str, object]] = {
    202: {"model": FailedBody, "description": "Unknown client (OK), or delivery result"},
    503: {"model": FailedBody, "description": "The push service asked to retry later"},
}


# Default tenant ------------------------------------------------------------------------------


@router.post("/clients", response_model=OkBody, dependencies=[RateLimit], summary="Register client")
async def register(request: Request, body: RegisterClient, svc: ServicesDep) -> Response:
    return await _register(request, svc, svc.tenants.default_tenant, body)


@router.delete(
    "/clients/{id}", response_model=OkBody, dependencies=[RateLimit], summary="Unregister client"
)
async def unregister(request: Request, id: ClientId, svc: ServicesDep) -> Response:
    return await _unregister(request, svc, svc.tenants.default_tenant, id)


@router.post(
    "/clients/{id}",
    response_model=OkBody,
    responses=PUSH_RESPONSES,
    dependencies=[RelaySignature],
    summary="Send notification",
)
async def push(id: ClientId, body: PushRequest, svc: ServicesDep) -> Response:
    return await push_to(svc, svc.tenants.default_tenant, id, body)


# A named tenant ------------------------------------------------------------------------------


@router.post(
    "/{tenant_id}/clients",
    response_model=OkBody,
    dependencies=[RateLimit],
    summary="Register client (tenant)",
)
async def register_in_tenant(
    request: Request, tenant_id: TenantId, body: RegisterClient, svc: ServicesDep
) -> Response:
    check_tenant_id(tenant_id)
    return await _register(request, svc, tenant_id, body)


@router.delete(
    "/{tenant_id}/clients/{id}",
    response_model=OkBody,
    dependencies=[RateLimit],
    summary="Unregister client (tenant)",
)
async def unregister_in_tenant(
    request: Request, tenant_id: TenantId, id: ClientId, svc: ServicesDep
) -> Response:
    check_tenant_id(tenant_id)
    return await _unregister(request, svc, tenant_id, id)


@router.post(
    "/{tenant_id}/clients/{id}",
    response_model=OkBody,
    responses=PUSH_RESPONSES,
    dependencies=[RelaySignature],
    summary="Send notification (tenant)",
)
async def push_in_tenant(
    tenant_id: TenantId, id: ClientId, body: PushRequest, svc: ServicesDep
) -> Response:
    check_tenant_id(tenant_id)
    return await push_to(svc, tenant_id, id, body)
