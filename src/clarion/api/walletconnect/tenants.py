"""Tenants and their credentials: /tenants, /tenants/{id}, /tenants/{id}/apns|fcm_v1."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from clarion.api.walletconnect.errors import FailedBody, OkBody, WalletConnectRoute, ok
from clarion.api.walletconnect.guards import (
    RateLimit,
    ServicesDep,
    check_tenant_jwt,
    public_url,
)
from clarion.api.walletconnect.models import CreateTenant, Deleted, TenantCreated, TenantDetail
from clarion.core import credentials
from clarion.core.platforms import Platform
from clarion.core.services import Services
from clarion.core.tenants import InvalidField, check_tenant_id
from clarion.errors import InvalidRequest

router = APIRouter(
    route_class=WalletConnectRoute, tags=["WalletConnect tenants"], dependencies=[RateLimit]
)

TenantId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]*$")]
MAX_FIELD = 64 * 1024
FORM_DOC = {"requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}}}


def _tenant(request: Request, svc: Services, tenant_id: str) -> str:
    check_tenant_id(tenant_id)
    check_tenant_jwt(request, svc, tenant_id)
    return tenant_id


@router.post("/tenants", response_model=TenantCreated, summary="Create tenant")
async def create_tenant(request: Request, body: CreateTenant, svc: ServicesDep) -> JSONResponse:
    check_tenant_id(body.id, location="body")
    check_tenant_jwt(request, svc, body.id)
    await svc.tenants.create(body.id)
    return JSONResponse({"url": f"{public_url(request, svc)}/{body.id}"})


@router.get("/tenants/{tenant_id}", response_model=TenantDetail, summary="Tenant detail")
async def get_tenant(request: Request, tenant_id: TenantId, svc: ServicesDep) -> JSONResponse:
    info = await svc.tenants.info(_tenant(request, svc, tenant_id))
    providers = []
    if Platform.APNS.value in info.platforms:
        providers.append("apns")
    if Platform.FCM.value in info.platforms:
        providers.append("fcm_v1")
    providers.append("noop")
    detail = TenantDetail(
        url=f"{public_url(request, svc)}/{tenant_id}",
        enabled_providers=providers,
        apns_topic=info.apns_topic,
        apns_type=info.apns_type,
        suspended=info.suspended_reason is not None,
        suspended_reason=info.suspended_reason,
    )
    return JSONResponse(detail.model_dump(exclude_none=True))


@router.delete("/tenants/{tenant_id}", response_model=Deleted, summary="Delete tenant")
async def delete_tenant(request: Request, tenant_id: TenantId, svc: ServicesDep) -> JSONResponse:
    await svc.tenants.delete(_tenant(request, svc, tenant_id))
    return JSONResponse({"success": True})


async def _form(request: Request) -> FormData:
    # The parser takes a form cut short for a whole one with fewer fields ("apns_topic is
    # required" for an upload that broke off): a form must end with its closing delimiter.
    boundary = _boundary(request.headers.get("content-type", ""))
    if boundary is not None:
        try:
            body = await request.body()  # kept by the request: the parser reads it from there
        except ClientDisconnect:  # gone before the form was whole: nobody reads the answer
            raise InvalidField("body", "The client left before the form was sent.") from None
        if not _is_closed(body, boundary):
            raise InvalidField(
                "body", "The multipart form is truncated: its closing boundary is missing."
            )
    try:
        return await request.form(max_files=8, max_fields=16, max_part_size=MAX_FIELD)
    except (AssertionError, ValueError, KeyError) as exc:
        raise InvalidField("body", f"The body must be a multipart form: {exc}"[:200]) from None
    except HTTPException as exc:  # Starlette's answer to a broken form (no boundary, ...)
        raise InvalidField(
            "body", f"The body must be a multipart form: {exc.detail}"[:200]
        ) from None


def _boundary(content_type: str) -> bytes | None:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1", "replace")
    return None


def _is_closed(body: bytes, boundary: bytes) -> bool:
    """True if ``body`` holds the close delimiter (RFC 2046: ``--boundary--`` at a line's start,
    then only whitespace to the end of its line)."""
    close = b"--" + boundary + b"--"
    if body.startswith(close):
        at = 0
    else:
        found = body.find(b"\r\n" + close)
        if found < 0:
            return False
        at = found + 2
    rest = body[at + len(close) :]
    line_end = rest.find(b"\r\n")
    return not (rest if line_end < 0 else rest[:line_end]).strip(b" \t")


async def _value(form: FormData, name: str, *, required: bool = True) -> bytes | None:
    """A form field as bytes, whether sent as text or as a file."""
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise InvalidField(name, f"{name} is required.")
        return None
    data = await value.read() if isinstance(value, UploadFile) else value.encode()
    if len(data) > MAX_FIELD:
        raise InvalidField(name, f"{name} is too large.")
    return data


async def _text(form: FormData, name: str, max_length: int) -> str:
    data = await _value(form, name)
    assert data is not None
    try:
        text = data.decode().strip()
    except UnicodeDecodeError:
        raise InvalidField(name, f"{name} must be UTF-8 text.") from None
    if not text or len(text) > max_length or "\x00" in text:
        raise InvalidField(name, f"{name} must be 1 to {max_length} characters, without NUL.")
    return text


@router.post(
    "/tenants/{tenant_id}/apns",
    response_model=OkBody,
    responses={400: {"model": FailedBody}},
    openapi_extra=FORM_DOC,
    summary="Set APNs credentials (multipart: apns_topic and a certificate or a .p8 key)",
)
async def set_apns(request: Request, tenant_id: TenantId, svc: ServicesDep) -> Response:
    tenant_id = _tenant(request, svc, tenant_id)
    form = await _form(request)
    topic = await _text(form, "apns_topic", 255)
    certificate = await _value(form, "apns_certificate", required=False)
    if certificate is not None and form.get("apns_pkcs8_pem"):
        # The certificate won and the key was dropped without a word.
        raise InvalidField(
            "apns_pkcs8_pem",
            "Send either apns_certificate (certificate auth) or apns_pkcs8_pem with "
            "apns_key_id and apns_team_id (token auth), not both.",
        )
    if certificate is not None:
        password = await _value(form, "apns_certificate_password", required=False)
        p12 = _base64_or_raw(certificate, "apns_certificate")
        await svc.tenants.set_apns_certificate(
            tenant_id, topic=topic, p12=p12, password=(password or b"").decode(errors="replace")
        )
        return ok()
    pem = await _value(form, "apns_pkcs8_pem")
    assert pem is not None
    await svc.tenants.set_apns_token(
        tenant_id,
        topic=topic,
        key_id=await _text(form, "apns_key_id", 64),
        team_id=await _text(form, "apns_team_id", 64),
        pem=pem,
    )
    return ok()


def _base64_or_raw(data: bytes, field: str) -> bytes:
    """A PKCS#12 file as sent: base64 text (the spec's form) or the binary file itself."""
    try:
        return credentials.decode_base64(data.decode(), field)
    except (InvalidRequest, UnicodeDecodeError):
        return data


@router.delete("/tenants/{tenant_id}/apns", response_model=OkBody, summary="Remove APNs")
async def delete_apns(request: Request, tenant_id: TenantId, svc: ServicesDep) -> Response:
    await svc.tenants.remove(_tenant(request, svc, tenant_id), Platform.APNS)
    return ok()


@router.post(
    "/tenants/{tenant_id}/fcm_v1",
    response_model=OkBody,
    responses={400: {"model": FailedBody}},
    openapi_extra=FORM_DOC,
    summary="Set FCM HTTP v1 credentials (multipart: credentials = service account JSON)",
)
async def set_fcm_v1(request: Request, tenant_id: TenantId, svc: ServicesDep) -> Response:
    tenant_id = _tenant(request, svc, tenant_id)
    document = await _value(await _form(request), "credentials")
    assert document is not None
    await svc.tenants.set_fcm(tenant_id, document)
    return ok()


@router.delete("/tenants/{tenant_id}/fcm_v1", response_model=OkBody, summary="Remove FCM v1")
async def delete_fcm_v1(request: Request, tenant_id: TenantId, svc: ServicesDep) -> Response:
    await svc.tenants.remove(_tenant(request, svc, tenant_id), Platform.FCM)
    return ok()


@router.post(
    "/tenants/{tenant_id}/fcm",
    responses={400: {"model": FailedBody}},
    summary="Legacy FCM server key: refused (use fcm_v1)",
)
async def set_fcm_legacy(request: Request, tenant_id: TenantId, svc: ServicesDep) -> Response:
    _tenant(request, svc, tenant_id)
    raise InvalidField(
        "api_key",
        "Google shut the legacy FCM API down in 2024: no server key can send any more. "
        "Upload a service account to /tenants/{id}/fcm_v1 instead.",
        name="provider_not_available",
    )
