"""OAuth2 access tokens for push providers: the JWT-bearer grant (FCM service accounts), the
client-credentials grant (HMS), and a cache that refreshes one token at a time.

The RS256 assertion is signed with ``cryptography`` directly; no Google library is needed at run
time. Secrets never appear in a repr or in an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from clarion import jsontext
from clarion.providers.base import Outcome, OutcomeKind
from clarion.providers.transport import Transport, TransportError

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google checks the assertion's audience against this constant, whatever ``token_uri`` says
# (google-auth hard-codes it too), so an emulator reached through ``token_uri`` sees the same JWT.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ASSERTION_LIFETIME = 3600
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


class TokenRefused(Exception):
    """The token endpoint refused our credentials: sending for this application must stop."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TokenUnavailable(Exception):
    """The token endpoint could not answer now (5xx, 429, no connection): try again later."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    expires_in: float  # seconds of validity the endpoint granted


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The parts of a Google service-account JSON file the JWT-bearer grant needs."""

    client_email: str
    token_uri: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    private_key_id: str | None = None
    project_id: str | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceAccount:
        """Parse a service-account JSON object; a ``ValueError`` names the field, never a secret."""
        for name in ("client_email", "private_key"):
            if not isinstance(info.get(name), str) or not info[name]:
                raise ValueError(f"service account: missing or empty {name!r}")
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("service account: private_key is not a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("service account: private_key is not an RSA key")
        token_uri = info.get("token_uri") or GOOGLE_TOKEN_AUDIENCE
        key_id = info.get("private_key_id")
        project_id = info.get("project_id")
        return cls(
            client_email=info["client_email"],
            token_uri=str(token_uri),
            private_key=key,
            private_key_id=str(key_id) if key_id else None,
            project_id=str(project_id) if project_id else None,
        )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_bearer_assertion(
    account: ServiceAccount,
    *,
    scope: str = FCM_SCOPE,
    audience: str = GOOGLE_TOKEN_AUDIENCE,
    now: float | None = None,
    lifetime: int = ASSERTION_LIFETIME,
) -> str:
    """The RS256-signed JWT a service account presents to Google's token endpoint (RFC 7523)."""
    issued = int(time.time() if now is None else now)
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {
        "iss": account.client_email,
        "scope": scope,
        "aud": audience,
        "iat": issued,
        "exp": issued + min(lifetime, ASSERTION_LIFETIME),
    }
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}".encode("ascii")
    signature = account.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def _json_segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or HTTP-date); None if absent or bad."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


async def fetch_jwt_bearer_token(
    transport: Transport,
    account: ServiceAccount,
    *,
    token_url: str | None = None,
    scope: str = FCM_SCOPE,
    request_timeout: float | None = None,
) -> AccessToken:
    """Exchange a signed assertion for an access token at ``token_url`` (default: ``token_uri``)."""
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": jwt_bearer_assertion(account, scope=scope)}
    return await _post_token_form(transport, token_url or account.token_uri, form, request_timeout)


async def fetch_client_credentials_token(
    transport: Transport,
    *,
    token_url: str,
    client_id: str,
    client_secret: str,
    request_timeout: float | None = None,
) -> AccessToken:
    """The OAuth2 client-credentials grant (HMS): the secret is form-encoded, never logged."""
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return await _post_token_form(transport, token_url, form, request_timeout)


async def _post_token_form(
    transport: Transport, url: str, form: Mapping[str, str], request_timeout: float | None
) -> AccessToken:
    body = urllib.parse.urlencode(form).encode()
    try:
        response = await transport.post(url, FORM_HEADERS, body, timeout=request_timeout)
    except TransportError as exc:
        raise TokenUnavailable(f"token endpoint unreachable: {exc}") from None
    if response.status == 200:
        return parse_token_response(response.body)
    reason = _oauth_error_reason(response.body, response.status)
    if response.status == 429 or response.status >= 500 or response.status == 408:
        raise TokenUnavailable(reason, retry_after=retry_after(response.headers))
    raise TokenRefused(reason, status=response.status)


def parse_token_response(body: bytes) -> AccessToken:
    """Read ``{"access_token", "expires_in", "token_type"}``; a malformed answer is unavailable."""
    try:
        data = jsontext.loads(body)
        value = data["access_token"]
        expires_in = float(data.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise TokenUnavailable("token endpoint answered 200 without an access token") from None
    if not isinstance(value, str) or not value:
        raise TokenUnavailable("token endpoint answered 200 without an access token")
    return AccessToken(value=value, expires_in=expires_in)


def _oauth_error_reason(body: bytes, status: int) -> str:
    try:
        data = jsontext.loads(body)
    except ValueError:
        return f"token endpoint HTTP {status}"
    if not isinstance(data, dict):
        return f"token endpoint HTTP {status}"
    error = data.get("error")
    description = data.get("error_description")
    parts = [str(part) for part in (error, description) if part not in (None, "")]
    return f"token endpoint HTTP {status}: {': '.join(parts)}" if parts else f"HTTP {status}"


def _consume_exception(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()


class AccessTokenCache:
    """Holds one access token until ``margin`` seconds before it expires.

    Concurrent callers that find no valid token wait for the same refresh; a failed refresh
    raises in every waiter and the next call starts a new one.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[AccessToken]],
        *,
        margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._value: str | None = None
        self._valid_until = 0.0
        self._refresh: asyncio.Future[str] | None = None
        self.refreshes = 0  # completed fetches, for tests and metrics

    def __repr__(self) -> str:
        return f"AccessTokenCache(refreshes={self.refreshes})"

    async def get(self) -> str:
        """A valid access token, fetching one if none is cached."""
        if self._value is not None and self._clock() < self._valid_until:
            return self._value
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._run_refresh())
            # Mark the outcome retrieved even if every waiter was cancelled meanwhile.
            self._refresh.add_done_callback(_consume_exception)
        return await asyncio.shield(self._refresh)

    def invalidate(self, value: str) -> None:
        """Forget ``value`` if it is still the cached token (a send was refused with it)."""
        if self._value == value:
            self._value = None
            self._valid_until = 0.0

    async def _run_refresh(self) -> str:
        try:
            token = await self._fetch()
        finally:
            self._refresh = None
        # Short-lived tokens (tests, emulators) keep at least half their life usable.
        margin = min(self._margin, token.expires_in / 2)
        self._value = token.value
        self._valid_until = self._clock() + token.expires_in - margin
        self.refreshes += 1
        return token.value


def credentials_rejected(token: str, exc: TokenRefused) -> Outcome:
    """A push token's outcome when the provider refused our OAuth credentials."""
    return Outcome(token, OutcomeKind.CREDENTIALS_REJECTED, reason=exc.reason, status=exc.status)


def retry_later(token: str, exc: TokenUnavailable) -> Outcome:
    """A push token's outcome when no access token could be had for now."""
    return Outcome(token, OutcomeKind.RETRY, reason=exc.reason, retry_after=exc.retry_after)
