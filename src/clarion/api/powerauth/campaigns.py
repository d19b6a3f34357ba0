"""Campaigns: /push/campaign/..."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from clarion.api.powerauth import campaign_models as c
from clarion.api.powerauth.deps import ServicesDep
from clarion.api.powerauth.envelope import (
    ObjectRequest,
    ObjectResponse,
    OkResponse,
    PowerAuthRoute,
    add_routes,
    ok,
)
from clarion.api.powerauth.messages import counts, to_notification
from clarion.api.powerauth.status import iso
from clarion.core.campaign_progress import Progress
from clarion.core.campaigns import CampaignView, parse_id
from clarion.errors import InvalidRequest, NotFound
from clarion.providers.base import Notification

router = APIRouter(route_class=PowerAuthRoute, tags=["Campaigns"])

CampaignId = Annotated[str, Path(description="Campaign identifier")]


def message_body(n: Notification) -> dict[str, Any]:
    """A stored notification back in the PowerAuth message body shape (unset fields omitted)."""
    body = {
        "title": n.title,
        "titleLocKey": n.title_loc_key,
        "titleLocArgs": list(n.title_loc_args) or None,
        "body": n.body,
        "bodyLocKey": n.body_loc_key,
        "bodyLocArgs": list(n.body_loc_args) or None,
        "badge": n.badge,
        "sound": n.sound,
        "icon": n.icon,
        "category": n.category,
        "collapseKey": n.collapse_key,
        "validUntil": n.expires_at.isoformat() if n.expires_at else None,
        "extras": dict(n.extras) or None,
    }
    return {k: v for k, v in body.items() if v is not None}


def detail_body(view: CampaignView, progress: Progress | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(view.id),
        "appId": view.app_id,
        "sent": view.sent,
        "message": message_body(view.notification),
        "timestampCreated": iso(view.created_at),
        "timestampSent": iso(view.sent_at) if view.sent_at else None,
        "timestampCompleted": iso(view.completed_at) if view.completed_at else None,
    }
    if progress is not None:
        body["devices"] = {
            "total": progress.total,
            "sent": progress.sent,
            "failed": progress.failed,
            "pending": progress.pending,
        }
    return body


@router.post(
    "/push/campaign/create",
    response_model=ObjectResponse[c.CreatedCampaign],
    summary="Create a campaign",
)
async def create_campaign(
    request: ObjectRequest[c.CreateCampaignRequest], svc: ServicesDep
) -> dict[str, Any]:
    body = request.requestObject
    if body.message is None:
        raise InvalidRequest("You must specify a push campaign message payload.")
    campaign_id = await svc.campaigns.create(body.appId, to_notification(body.message))
    return ok({"id": str(campaign_id)})


async def delete_campaign(campaign_id: CampaignId, svc: ServicesDep) -> dict[str, Any]:
    """Delete a campaign and its users; ``deleted`` is false if there was no such campaign."""
    try:
        deleted = await svc.campaigns.delete(parse_id(campaign_id))
    except NotFound:
        deleted = False
    return ok({"deleted": deleted})


add_routes(
    router,
    delete_campaign,
    [
        ("DELETE", "/push/campaign/{campaign_id}/delete"),
        ("POST", "/push/campaign/{campaign_id}/delete"),
    ],
    response_model=ObjectResponse[c.DeletedCampaign],
    summary="Delete a campaign",
)


@router.get(
    "/push/campaign/{campaign_id}/detail",
    response_model=ObjectResponse[c.CampaignDetail],
    summary="Campaign detail, with the progress of its live send (a clarion extension)",
)
async def campaign_detail(campaign_id: CampaignId, svc: ServicesDep) -> dict[str, Any]:
    key = parse_id(campaign_id)
    view = await svc.campaigns.detail(key)
    return ok(detail_body(view, await svc.campaigns.progress(key)))


@router.get(
    "/push/campaign/list",
    response_model=ObjectResponse[list[c.CampaignSummary]],
    summary="List campaigns: only the sent ones unless all=true",
)
async def list_campaigns(
    svc: ServicesDep,
    show_all: Annotated[
        bool, Query(alias="all", description="true: every campaign; false: only sent ones")
    ] = False,
) -> dict[str, Any]:
    views = await svc.campaigns.listing(include_unsent=show_all)
    return ok([detail_body(v) for v in views])


async def add_users(
    campaign_id: CampaignId, request: ObjectRequest[c.UserIds], svc: ServicesDep
) -> dict[str, Any]:
    """Add users to a campaign; a user added twice is kept once."""
    await svc.campaigns.add_users(parse_id(campaign_id), request.requestObject)
    return ok()


add_routes(
    router,
    add_users,
    [
        ("PUT", "/push/campaign/{campaign_id}/user/add"),
        ("POST", "/push/campaign/{campaign_id}/user/add"),
    ],
    response_model=OkResponse,
    summary="Add users to a campaign",
)


@router.get(
    "/push/campaign/{campaign_id}/user/list",
    response_model=c.UserPage,
    summary="A page of a campaign's users",
)
async def list_users(
    campaign_id: CampaignId,
    svc: ServicesDep,
    page: Annotated[int, Query(ge=0, le=1_000_000_000, description="Page, from 0")] = 0,
    size: Annotated[int, Query(ge=1, le=c.MAX_PAGE_SIZE, description="Users per page")] = 100,
) -> dict[str, Any]:
    key = parse_id(campaign_id)
    users = await svc.campaigns.users(key, page=page, size=size)
    return {
        "status": "OK",
        "page": page,
        "size": size,
        "responseObject": {"campaignId": str(key), "users": users},
    }


async def remove_users(
    campaign_id: CampaignId, request: ObjectRequest[c.UserIds], svc: ServicesDep
) -> dict[str, Any]:
    """Remove users from a campaign; removing a user who is not in it is OK."""
    await svc.campaigns.remove_users(parse_id(campaign_id), request.requestObject)
    return ok()


add_routes(
    router,
    remove_users,
    [
        ("DELETE", "/push/campaign/{campaign_id}/user/delete"),
        ("POST", "/push/campaign/{campaign_id}/user/delete"),
    ],
    response_model=OkResponse,
    summary="Remove users from a campaign",
)


@router.post(
    "/push/campaign/send/test/{campaign_id}",
    response_model=ObjectResponse[c.TestSendResponse],
    summary="Send the campaign's message to one user now (the campaign stays unsent)",
)
async def send_test(
    campaign_id: CampaignId, request: ObjectRequest[c.TestSendRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Answers after the providers did, with the outcome per platform (an extension: a
    device that could not be reached is counted ``failed`` or ``pending``, not hidden)."""
    result = await svc.campaigns.send_test(parse_id(campaign_id), request.requestObject.userId)
    return ok({"result": counts(result)})


@router.post(
    "/push/campaign/send/live/{campaign_id}",
    response_model=OkResponse,
    summary="Send the campaign to every device of its users, once per device",
)
async def send_live(campaign_id: CampaignId, svc: ServicesDep) -> dict[str, Any]:
    """Answers once the fan-out is durably scheduled; the workers deliver it."""
    await svc.campaigns.send_live(parse_id(campaign_id))
    return ok()
