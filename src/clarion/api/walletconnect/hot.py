"""The WalletConnect hot routes: ``GET /health`` and relay pushes (see ``clarion.api.hot``).

Each takes a request only in its regular form and otherwise returns None, so that the FastAPI
route answers it (with the dialect's FAILED body for whatever is wrong).
"""

from __future__ import annotations

from fastapi.responses import PlainTextResponse
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from clarion.api import json_content_type
from clarion.api.hot import HotRequest, HotRoute
from clarion.api.walletconnect import clients
from clarion.api.walletconnect.errors import map_error
from clarion.api.walletconnect.guards import check_relay_signature
from clarion.api.walletconnect.models import PushRequest
from clarion.core.tenants import InvalidField, check_tenant_id

_PUSH: TypeAdapter[PushRequest] = TypeAdapter(PushRequest)


async def health(_request: HotRequest) -> Response:
    return PlainTextResponse(await clients.health())


async def push(request: HotRequest) -> Response | None:
    """``POST /clients/{id}`` and ``POST /{tenant_id}/clients/{id}``."""
    client_id = request.params["id"]
    tenant_id = request.params.get("tenant_id")
    if len(client_id) > 255 or "\x00" in client_id:
        return None
    if tenant_id is not None:
        if tenant_id == "tenants":
            return None  # /tenants/{id}/apns and friends: the full route
        try:
            check_tenant_id(tenant_id)
        except InvalidField:
            return None  # the full route answers with the dialect's field error
    svc = request.services
    if svc.walletconnect.relay_key is not None:
        try:
            check_relay_signature(
                svc,
                request.body,
                request.header(b"x-ed25519-signature"),
                request.header(b"x-ed25519-timestamp"),
            )
        except Exception:
            return None
    if not json_content_type(request.header(b"content-type")):
        return None  # the full route reads only a JSON content type, and says so
    data = request.json()
    if data is None:
        return None
    try:
        body = _PUSH.validate_python(data)
    except ValidationError:
        return None
    try:
        return await clients.push_to(svc, tenant_id or svc.tenants.default_tenant, client_id, body)
    except Exception as exc:  # as WalletConnectRoute: the dialect's FAILED body
        return map_error(exc)


ROUTES = (
    HotRoute("GET", "/health", health),
    HotRoute("POST", "/clients/{id}", push),
    HotRoute("POST", "/{tenant_id}/clients/{id}", push),
)
