"""The PowerAuth Push Server dialect: /push, /admin, /inbox."""

from fastapi import APIRouter

from clarion.api.powerauth import admin, campaigns, devices, inbox, messages, status
from clarion.api.powerauth.envelope import ERROR_RESPONSES, PowerAuthRoute


def router() -> APIRouter:
    """All PowerAuth routes; every one answers errors in the PowerAuth format."""
    root = APIRouter(route_class=PowerAuthRoute, responses=ERROR_RESPONSES)
    root.include_router(status.router)
    # Inbox reads are the most frequent calls (apps poll counts): matched early, routes are
    # tried in order.
    root.include_router(inbox.router)
    root.include_router(devices.router)
    root.include_router(messages.router)
    root.include_router(campaigns.router)
    root.include_router(admin.router)
    return root
