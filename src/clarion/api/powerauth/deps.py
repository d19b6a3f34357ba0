"""Dependencies shared by the dialect's routes."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Annotated

from fastapi import Depends, Request

from clarion.core.services import Services
from clarion.errors import Unauthorized


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def _basic_credentials(value: str) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized(
            "Malformed basic authorization header.", challenge='Basic realm="clarion"'
        ) from None
    return user, password


def require_admin(request: Request, svc: ServicesDep) -> None:
    """Admin endpoints are open unless a bearer token or a user and password are configured."""
    settings = svc.settings
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is None and settings.admin_username is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if token is not None and scheme == "bearer" and _same(value, token):
        return
    if settings.admin_username is not None and scheme == "basic":
        user, given = _basic_credentials(value)
        expected = settings.admin_password.get_secret_value() if settings.admin_password else ""
        if _same(user, settings.admin_username) and _same(given, expected):
            return
    schemes = [
        scheme
        for scheme, configured in (("Bearer", token), ("Basic", settings.admin_username))
        if configured is not None
    ]
    # The schemes configured, each its own challenge (a Basic one alone said the token would
    # not do).
    challenge = ", ".join(f'{scheme} realm="clarion"' for scheme in schemes)
    raise Unauthorized("Admin credentials are missing or wrong.", challenge=challenge)


AdminDep = Depends(require_admin)
