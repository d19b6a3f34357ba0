"""Applications and their credentials: /admin/app/..."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query

from clarion.api.powerauth.deps import AdminDep, ServicesDep
from clarion.api.powerauth.envelope import (
    NoNul,
    ObjectRequest,
    ObjectResponse,
    OkResponse,
    PowerAuthRoute,
    add_routes,
    ok,
)
from clarion.api.powerauth.models import (
    AndroidUpdateRequest,
    AppDetailRequest,
    AppIdRequest,
    ApplicationDetail,
    ApplicationList,
    CreatedApplication,
    HuaweiUpdateRequest,
    IosUpdateRequest,
)
from clarion.core import credentials
from clarion.core.apps import AppSummary
from clarion.core.platforms import Platform, parse_environment

router = APIRouter(route_class=PowerAuthRoute, tags=["Admin"], dependencies=[AdminDep])


def _app(summary: AppSummary, *, null_when_absent: bool = False) -> dict[str, Any]:
    def flag(value: bool) -> bool | None:
        return None if null_when_absent and not value else value

    return {
        "appId": summary.app_id,
        "ios": flag(summary.ios),
        "android": flag(summary.android),
        "huawei": flag(summary.huawei),
    }


@router.get(
    "/admin/app/list", response_model=ObjectResponse[ApplicationList], summary="List applications"
)
async def list_applications(svc: ServicesDep) -> dict[str, Any]:
    apps = await svc.apps.summaries()
    return ok({"applicationList": [_app(a) for a in apps]})


@router.get(
    "/admin/app/unconfigured/list",
    response_model=ObjectResponse[ApplicationList],
    summary="List applications with no platform configured",
)
async def list_unconfigured_applications(svc: ServicesDep) -> dict[str, Any]:
    apps = await svc.apps.summaries(unconfigured_only=True)
    # The seed shows null (not false) for the platforms of an unconfigured application.
    return ok({"applicationList": [_app(a, null_when_absent=True) for a in apps]})


@router.post(
    "/admin/app/detail",
    response_model=ObjectResponse[ApplicationDetail],
    response_model_exclude_none=True,
    summary="Application detail (public identifiers only, never keys or secrets)",
)
async def application_detail(
    request: ObjectRequest[AppDetailRequest], svc: ServicesDep
) -> dict[str, Any]:
    body = request.requestObject
    detail = await svc.apps.detail(
        body.appId, ios=body.includeIos, android=body.includeAndroid, huawei=body.includeHuawei
    )
    return ok(
        {
            "application": _app(detail.summary),
            "iosBundle": detail.ios_bundle,
            "iosKeyId": detail.ios_key_id,
            "iosTeamId": detail.ios_team_id,
            "iosEnvironment": detail.ios_environment,
            "androidProjectId": detail.android_project_id,
            "huaweiProjectId": detail.huawei_project_id,
            "huaweiClientId": detail.huawei_client_id,
            "iosCredentialsRejected": detail.ios_rejected,
            "androidCredentialsRejected": detail.android_rejected,
            "huaweiCredentialsRejected": detail.huawei_rejected,
        }
    )


@router.post(
    "/admin/app/create",
    response_model=ObjectResponse[CreatedApplication],
    summary="Create application",
)
async def create_application(
    request: ObjectRequest[AppIdRequest], svc: ServicesDep
) -> dict[str, Any]:
    app_id = await svc.apps.create(request.requestObject.appId)
    return ok({"appId": app_id})


async def update_ios(request: ObjectRequest[IosUpdateRequest], svc: ServicesDep) -> dict[str, Any]:
    """Upload APNs token-auth credentials: the .p8 key (base64 of its PEM) and its identifiers."""
    body = request.requestObject
    pem = credentials.decode_base64(body.privateKeyBase64, "Private key")
    await svc.apps.set_apns(
        body.appId,
        bundle=credentials.apns_topic(body.bundle, "Bundle"),
        key_id=credentials.apns_key_part(body.keyId, "Key ID"),
        team_id=credentials.apns_key_part(body.teamId, "Team ID"),
        environment=parse_environment(body.environment) if body.environment else None,
        private_key_pem=credentials.apns_private_key(pem),
    )
    return ok()


async def update_android(
    request: ObjectRequest[AndroidUpdateRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Upload FCM credentials: base64 of a Google service account JSON."""
    body = request.requestObject
    document = credentials.decode_base64(body.privateKeyBase64, "Private key")
    account = credentials.fcm_service_account(document)
    project = credentials.project_id(body.projectId, "Project ID")
    await svc.apps.set_fcm(body.appId, project_id=project, service_account=account)
    return ok()


async def update_huawei(
    request: ObjectRequest[HuaweiUpdateRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Upload HMS Push Kit credentials: project id and OAuth 2.0 client id and secret."""
    body = request.requestObject
    await svc.apps.set_hms(
        body.appId,
        project_id=credentials.project_id(body.projectId, "Project ID"),
        client_id=body.clientId,
        client_secret=body.clientSecret,
    )
    return ok()


def _remover(platform: Platform) -> tuple[Callable[..., Awaitable[Any]], Callable[..., Any]]:
    async def by_body(request: ObjectRequest[AppIdRequest], svc: ServicesDep) -> dict[str, Any]:
        await svc.apps.remove(request.requestObject.appId, platform)
        return ok()

    async def by_query(
        appId: Annotated[str, Query(min_length=1, max_length=255), NoNul],
        svc: ServicesDep,
    ) -> dict[str, Any]:
        await svc.apps.remove(appId, platform)
        return ok()

    by_body.__name__ = f"remove_{platform.seed_name}"
    by_query.__name__ = f"remove_{platform.value}_by_query"
    return by_body, by_query


for _platform, _update in (
    (Platform.APNS, update_ios),
    (Platform.FCM, update_android),
    (Platform.HMS, update_huawei),
):
    _seed, _upstream = _platform.seed_name, _platform.value
    add_routes(
        router,
        _update,
        [
            ("PUT", f"/admin/app/{_seed}/update"),
            ("POST", f"/admin/app/{_seed}/update"),
            ("PUT", f"/admin/app/{_upstream}"),
            ("POST", f"/admin/app/{_upstream}"),
        ],
        response_model=OkResponse,
        summary=f"Update {_seed} configuration",
    )
    _by_body, _by_query = _remover(_platform)
    add_routes(
        router,
        _by_body,
        [("DELETE", f"/admin/app/{_seed}/remove"), ("POST", f"/admin/app/{_seed}/remove")],
        response_model=OkResponse,
        summary=f"Remove {_seed} configuration",
    )
    add_routes(
        router,
        _by_query,
        [("DELETE", f"/admin/app/{_upstream}")],
        response_model=OkResponse,
        summary=f"Remove {_seed} configuration (official Java client form, appId in the query)",
    )
