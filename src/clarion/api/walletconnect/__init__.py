"""The WalletConnect push server dialect: /health, /clients, /{tenant_id}/clients, /tenants."""

from fastapi import APIRouter

from clarion.api.walletconnect import clients, tenants
from clarion.api.walletconnect.errors import (
    ERROR_RESPONSES,
    WalletConnectRoute,
    http_failure,
    owns_path,
)


def router() -> APIRouter:
    """All WalletConnect routes; every one answers errors in the FAILED format."""
    root = APIRouter(route_class=WalletConnectRoute, responses=ERROR_RESPONSES)
    # Tenant routes first: /tenants/{id} must not be taken for /{tenant_id}/clients.
    root.include_router(tenants.router)
    root.include_router(clients.router)
    return root


__all__ = ["http_failure", "owns_path", "router"]
