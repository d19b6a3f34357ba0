"""Huawei HMS Push Kit (Android and HarmonyOS 3.x-4.x), the v2 send API.

We send to ``/v2/{projectId}/messages:send`` because ``HmsCredentials`` carries the project id
and v2 accepts both project-level and app-level OAuth clients; without a project id we fall back
to v1 with the OAuth client id as the app id. Access tokens come from the client-credentials
grant and are shared until shortly before they expire. One request carries up to 1000 tokens;
Push Kit answers with a result code in the body (a string), whatever the HTTP status.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar

from clarion import jsontext
from clarion.providers.base import HmsCredentials, Notification, Outcome, OutcomeKind, Provider
from clarion.providers.hms_payload import HMS_MAX_TOKENS, hms_message, hms_request_body
from clarion.providers.oauth import (
    AccessToken,
    AccessTokenCache,
    TokenRefused,
    TokenUnavailable,
    credentials_rejected,
    fetch_client_credentials_token,
    retry_after,
    retry_later,
)
from clarion.providers.transport import TRANSPORT_PREFIX, HttpResponse, Transport, TransportError

HMS_TOKEN_URL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"  # noqa: S105 - a URL
HMS_PUSH_BASE_URL = "https://push-api.cloud.huawei.com"

SUCCESS = "80000000"
PARTIAL_SUCCESS = "80100000"
ALL_TOKENS_INVALID = "80300007"
ACCESS_TOKEN_CODES = frozenset({"80200001", "80200003"})  # invalid / expired access token
# The application cannot send at all: Push Kit not enabled, OAuth client refused.
CONFIGURATION_CODES = frozenset({"80300002", "80600003"})
# System busy or too many concurrent topic sends: back off.
TEMPORARY_CODES = frozenset({"81000001", "80100017"})


def parse_hms_result(body: bytes) -> tuple[str | None, str | None]:
    """The ``code`` and ``msg`` of a Push Kit answer; (None, None) if it is not that JSON."""
    try:
        data = jsontext.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code, msg = data.get("code"), data.get("msg")
    return (str(code) if code is not None else None, msg if isinstance(msg, str) else None)


def illegal_tokens(msg: str | None) -> set[str]:
    """Tokens a partial success (80100000) names as invalid, in the v1 or v3 ``msg`` shape."""
    try:
        detail = jsontext.loads(msg or "")
    except ValueError:
        return set()
    if not isinstance(detail, dict):
        return set()
    listed = detail.get("illegal_tokens", detail.get("illegalTokens"))
    if isinstance(listed, list):
        return {token for token in listed if isinstance(token, str)}
    if isinstance(listed, dict):  # v3: grouped by reason
        return {t for group in listed.values() if isinstance(group, list) for t in group}
    return set()


def is_access_token_rejection(response: HttpResponse) -> bool:
    """Push Kit refused our access token (worth one refresh)."""
    code, _ = parse_hms_result(response.body)
    return response.status == 401 or code in ACCESS_TOKEN_CODES


def classify_hms_response(tokens: Sequence[str], response: HttpResponse) -> list[Outcome]:
    """One request's answer as one outcome per token, in order."""
    status = response.status
    code, msg = parse_hms_result(response.body)
    reason = f"{code}: {msg}" if code and msg else code or f"HTTP {status}"
    if code == SUCCESS and status == 200:
        return [Outcome(token, OutcomeKind.DELIVERED, status=status) for token in tokens]
    if code == PARTIAL_SUCCESS:
        dead = illegal_tokens(msg)
        return [
            Outcome(token, OutcomeKind.TOKEN_DEAD, reason="illegal token", status=status)
            if token in dead
            else Outcome(token, OutcomeKind.DELIVERED, status=status)
            for token in tokens
        ]
    if code == ALL_TOKENS_INVALID:
        kind = OutcomeKind.TOKEN_DEAD
    elif status == 401 or code in ACCESS_TOKEN_CODES or code in CONFIGURATION_CODES:
        kind = OutcomeKind.CREDENTIALS_REJECTED
    elif code in TEMPORARY_CODES or status == 429 or status >= 500:
        wait = retry_after(response.headers)
        return [Outcome(t, OutcomeKind.RETRY, reason, wait, status) for t in tokens]
    else:
        kind = OutcomeKind.FAILED
    return [Outcome(token, kind, reason=reason, status=status) for token in tokens]


class HmsProvider(Provider):
    """Sends through HMS Push Kit for one Huawei project (or app).

    ``transport`` carries the sends; ``token_transport`` (default: the same) the OAuth grants.
    The provider owns both and closes them in ``close()``.
    """

    name: ClassVar[str] = "hms"

    def __init__(
        self,
        credentials: HmsCredentials,
        transport: Transport,
        *,
        token_transport: Transport | None = None,
        base_url: str = HMS_PUSH_BASE_URL,
        token_url: str = HMS_TOKEN_URL,
        timeout: float = 10.0,
        concurrency: int = 16,
    ) -> None:
        self._credentials = credentials
        self._transport = transport
        self._token_transport = token_transport or transport
        if credentials.project_id:
            path = f"v2/{urllib.parse.quote(credentials.project_id, safe='')}"
        else:
            path = f"v1/{urllib.parse.quote(credentials.client_id, safe='')}"
        self.send_url = f"{base_url.rstrip('/')}/{path}/messages:send"
        self.token_url = token_url
        self._timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        self.access_tokens = AccessTokenCache(self._fetch_access_token)

    def __repr__(self) -> str:
        return f"HmsProvider(send_url={self.send_url!r})"

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        if not tokens:
            return []
        message = hms_message(notification)
        try:
            access = await self.access_tokens.get()
        except TokenRefused as exc:
            return [credentials_rejected(token, exc) for token in tokens]
        except TokenUnavailable as exc:
            return [retry_later(token, exc) for token in tokens]
        chunks = [tokens[i : i + HMS_MAX_TOKENS] for i in range(0, len(tokens), HMS_MAX_TOKENS)]
        results = await asyncio.gather(*(self._send_chunk(message, c, access) for c in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def close(self) -> None:
        await self._transport.close()
        if self._token_transport is not self._transport:
            await self._token_transport.close()

    async def _send_chunk(
        self, message: dict[str, Any], tokens: Sequence[str], access: str
    ) -> list[Outcome]:
        body = hms_request_body(message, tokens)
        async with self._limit:
            try:
                response = await self._post(body, access)
                if is_access_token_rejection(response):
                    self.access_tokens.invalidate(access)
                    try:
                        access = await self.access_tokens.get()
                    except TokenRefused as exc:
                        return [credentials_rejected(token, exc) for token in tokens]
                    except TokenUnavailable as exc:
                        return [retry_later(token, exc) for token in tokens]
                    response = await self._post(body, access)
            except TransportError as exc:
                return [
                    Outcome(t, OutcomeKind.RETRY, reason=f"{TRANSPORT_PREFIX}{exc}") for t in tokens
                ]
        return classify_hms_response(tokens, response)

    async def _post(self, body: bytes, access: str) -> HttpResponse:
        headers = {
            "authorization": f"Bearer {access}",
            "content-type": "application/json; charset=UTF-8",
        }
        return await self._transport.post(self.send_url, headers, body, timeout=self._timeout)

    async def _fetch_access_token(self) -> AccessToken:
        return await fetch_client_credentials_token(
            self._token_transport,
            token_url=self.token_url,
            client_id=self._credentials.client_id,
            client_secret=self._credentials.client_secret,
            request_timeout=self._timeout,
        )
