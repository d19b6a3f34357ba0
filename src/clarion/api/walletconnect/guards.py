"""Who may call: the per-address rate limit, relay signatures, client and tenant JWTs."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from clarion.api.walletconnect.errors import RateLimited
from clarion.core import wcauth
from clarion.core.services import Services
from clarion.errors import Unauthorized


async def services(request: Request) -> Services:
    # async: a plain function dependency would cost a thread-pool hop on every request
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests, refilled continuously.

    In memory, per process: with N processes behind a balancer an address gets up to N times
    the figure (as upstream, whose limiter is in memory too).
    """

    MAX_ADDRESSES = 100_000

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}

    def check(self, address: str, now: float) -> float | None:
        """None if the request may go on, else the seconds until it would be allowed."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.MAX_ADDRESSES:
                self._buckets.clear()  # crude but bounded: a flood of addresses resets all
            bucket = self._buckets[address] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate


def client_address(request: Request, trusted: list[str]) -> str:
    """The peer address, or the last address before our trusted proxies in X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    # Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3): a proxy that adds its
    # own line (HAProxy's option forwardfor) left the client's own line first, and reading
    # only that one let a client pick the address it is counted as.
    lines = request.headers.getlist("x-forwarded-for")
    hops = [h.strip() for h in ",".join(lines).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


async def rate_limit(request: Request, svc: ServicesDep) -> None:
    """Refuse with 429 when the caller's address spent its requests for the minute."""
    per_minute = svc.settings.wc_rate_limit_per_minute
    if per_minute <= 0:
        return
    limiter: RateLimiter | None = getattr(request.app.state, "wc_rate_limiter", None)
    if limiter is None:
        limiter = request.app.state.wc_rate_limiter = RateLimiter(per_minute)
    wait = limiter.check(client_address(request, svc.settings.wc_trusted_proxies), time.monotonic())
    if wait is not None:
        raise RateLimited(wait)


RateLimit = Depends(rate_limit)


def public_url(request: Request, svc: Services) -> str:
    return (svc.settings.public_url or str(request.base_url)).rstrip("/")


_SIGNED = "clarion.relay_signed"  # in the request's scope: the signature was checked


async def relay_signature(request: Request, svc: ServicesDep) -> None:
    """When signatures are on, a push must be signed by the relay's Ed25519 key (checked once
    per request: ``WalletConnectRoute`` checks it before the body is parsed)."""
    if svc.walletconnect.relay_key is None or request.scope.get(_SIGNED):
        return
    check_relay_signature(
        svc,
        await request.body(),
        request.headers.get("x-ed25519-signature"),
        request.headers.get("x-ed25519-timestamp"),
    )
    request.scope[_SIGNED] = True


def check_relay_signature(
    svc: Services, body: bytes, signature: str | None, timestamp: str | None
) -> None:
    """Unauthorized unless signatures are off or ``signature`` signs ``timestamp`` + body."""
    key = svc.walletconnect.relay_key
    if key is None:
        return
    wcauth.verify_relay_signature(
        key,
        body,
        signature,
        timestamp,
        now=time.time(),
        max_age=svc.settings.wc_signature_max_age,
    )


RelaySignature = Depends(relay_signature)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be a Bearer token.")
    return token.strip()


def check_client_jwt(request: Request, svc: Services, client_id: str) -> None:
    """A did:key JWT of the client itself, when the header is sent (or always, by setting)."""
    token = _bearer(request)
    if token is None:
        if svc.settings.wc_require_client_jwt:
            raise Unauthorized("A client JWT (Authorization: Bearer) is required.")
        return
    wcauth.verify_client_jwt(
        token,
        client_id=client_id.removeprefix(wcauth.DID_KEY_PREFIX),
        audience=public_url(request, svc),
        now=time.time(),
    )


def check_tenant_jwt(request: Request, svc: Services, tenant_id: str) -> None:
    """With a tenant JWT secret set, the caller must present an HS256 JWT for the tenant."""
    secret = svc.settings.wc_tenant_jwt_secret
    if secret is None:
        return
    token = _bearer(request)
    if token is None:
        raise Unauthorized("A tenant JWT (Authorization: Bearer) is required.")
    wcauth.verify_tenant_jwt(
        token, secret=secret.get_secret_value().encode(), tenant_id=tenant_id, now=time.time()
    )
