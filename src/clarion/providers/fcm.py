"""Firebase Cloud Messaging, HTTP v1: one request per token, sent concurrently.

Access tokens come from the application's service account through the JWT-bearer grant
(``clarion.providers.oauth``) and are shared by every send until shortly before they expire.
Answers are classified by the v1 error model (``google.rpc.Status`` with an ``FcmError`` detail).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from clarion import jsontext
from clarion.providers.base import FcmCredentials, Notification, Outcome, OutcomeKind, Provider
from clarion.providers.fcm_payload import fcm_message, fcm_request_body, local_rejection
from clarion.providers.oauth import (
    AccessToken,
    AccessTokenCache,
    ServiceAccount,
    TokenRefused,
    TokenUnavailable,
    credentials_rejected,
    fetch_jwt_bearer_token,
    retry_after,
    retry_later,
)
from clarion.providers.transport import TRANSPORT_PREFIX, HttpResponse, Transport, TransportError

FCM_BASE_URL = "https://fcm.googleapis.com"
QUOTA_BACKOFF = 60.0
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
APNS_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.ApnsError"
# Errors of the Firebase project's own APNs / web-push configuration, not of our access token.
THIRD_PARTY_AUTH_CODES = frozenset({"THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"})
# APNs reasons relayed in an ApnsError detail that mean the (iOS) token is gone.
APNS_DEAD_REASONS = frozenset(
    {"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic", "ExpiredToken"}
)


@dataclass(frozen=True, slots=True)
class FcmError:
    """What an FCM error body says, with every part optional (a 502 may be an HTML page)."""

    status: str | None = None  # the google.rpc canonical code, e.g. NOT_FOUND
    message: str | None = None
    error_code: str | None = None  # FcmError.errorCode, e.g. UNREGISTERED
    about_token: bool = False  # a BadRequest field violation names message.token
    apns_reason: str | None = None
    # BadRequest field violations, "field: description" (FCM's generic message says only
    # "Request contains an invalid argument.")
    violations: tuple[str, ...] = ()


def parse_fcm_error(body: bytes) -> FcmError:
    """Read a v1 error body; anything that is not the expected JSON gives an empty FcmError."""
    try:
        error = jsontext.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return FcmError()
    if not isinstance(error, dict):
        return FcmError()
    error_code = apns_reason = None
    about_token = False
    said: list[str] = []
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type")
        if kind == FCM_ERROR_TYPE:
            error_code = detail.get("errorCode")
        elif kind == APNS_ERROR_TYPE:
            apns_reason = detail.get("reason")
        elif kind == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations") or ()
            about_token = any(
                isinstance(v, dict) and v.get("field") == "message.token" for v in violations
            )
            said += [
                f"{v.get('field')}: {v.get('description')}"
                for v in violations
                if isinstance(v, dict)
                and isinstance(v.get("field"), str)
                and isinstance(v.get("description"), str)
            ]
    return FcmError(
        status=_str_or_none(error.get("status")),
        message=_str_or_none(error.get("message")),
        error_code=_str_or_none(error_code),
        about_token=about_token,
        apns_reason=_str_or_none(apns_reason),
        violations=tuple(said),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_access_token_rejection(response: HttpResponse) -> bool:
    """A 401 about our OAuth access token (worth one refresh), not the project's APNs keys."""
    return (
        response.status == 401
        and parse_fcm_error(response.body).error_code not in THIRD_PARTY_AUTH_CODES
    )


def classify_fcm_response(token: str, response: HttpResponse) -> Outcome:
    """One send's answer as an outcome, per the v1 error model."""
    status = response.status
    if status == 200:
        return Outcome(token, OutcomeKind.DELIVERED, status=200)
    error = parse_fcm_error(response.body)
    code = error.error_code or error.status or f"HTTP {status}"
    if status == 429 or status >= 500:
        wait = retry_after(response.headers)
        if wait is None and status == 429:
            wait = QUOTA_BACKOFF  # Google: wait at least a minute before retrying over quota
        return Outcome(token, OutcomeKind.RETRY, reason=code, retry_after=wait, status=status)
    if error.error_code == "UNREGISTERED" or error.apns_reason in APNS_DEAD_REASONS:
        reason = error.apns_reason or code
        return Outcome(token, OutcomeKind.TOKEN_DEAD, reason=reason, status=status)
    if status == 403 and error.error_code == "SENDER_ID_MISMATCH":
        return Outcome(token, OutcomeKind.TOKEN_DEAD, reason=code, status=status)
    if status == 400 and _is_about_token(error):
        return Outcome(token, OutcomeKind.TOKEN_DEAD, reason=code, status=status)
    if status in (401, 403):
        return Outcome(token, OutcomeKind.CREDENTIALS_REJECTED, reason=code, status=status)
    detail = f"{code}: {error.message}" if error.message else code
    if error.violations:
        detail += f" ({'; '.join(error.violations)})"
    return Outcome(token, OutcomeKind.FAILED, reason=detail, status=status)


def _is_about_token(error: FcmError) -> bool:
    # INVALID_ARGUMENT also means a bad payload: only a token complaint may cost a token.
    if error.about_token:
        return True
    return error.message is not None and "registration token" in error.message.lower()


class FcmProvider(Provider):
    """Sends through FCM HTTP v1 for one Firebase project.

    ``transport`` carries the sends; ``token_transport`` (default: the same) the OAuth grants.
    The provider owns both and closes them in ``close()``.
    """

    name: ClassVar[str] = "fcm"

    def __init__(
        self,
        credentials: FcmCredentials,
        transport: Transport,
        *,
        token_transport: Transport | None = None,
        base_url: str = FCM_BASE_URL,
        token_url: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 500,
    ) -> None:
        self._account = ServiceAccount.from_info(credentials.service_account)
        self._transport = transport
        self._token_transport = token_transport or transport
        project = urllib.parse.quote(credentials.project_id, safe="")
        self.send_url = f"{base_url.rstrip('/')}/v1/projects/{project}/messages:send"
        self.token_url = token_url or self._account.token_uri
        self._timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        self.access_tokens = AccessTokenCache(self._fetch_access_token)

    def __repr__(self) -> str:
        return f"FcmProvider(send_url={self.send_url!r})"

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        if not tokens:
            return []
        message = fcm_message(notification)
        rejected = local_rejection(message)
        if rejected is not None:
            return [Outcome(token, OutcomeKind.FAILED, reason=rejected) for token in tokens]
        try:
            access = await self.access_tokens.get()
        except TokenRefused as exc:
            return [credentials_rejected(token, exc) for token in tokens]
        except TokenUnavailable as exc:
            return [retry_later(token, exc) for token in tokens]
        if len(tokens) == 1:
            return [await self._send_one(message, tokens[0], access)]
        sends = (self._send_one(message, token, access) for token in tokens)
        return list(await asyncio.gather(*sends))

    async def close(self) -> None:
        await self._transport.close()
        if self._token_transport is not self._transport:
            await self._token_transport.close()

    async def _send_one(self, message: dict[str, Any], token: str, access: str) -> Outcome:
        body = fcm_request_body(message, token)
        async with self._limit:
            try:
                response = await self._post(body, access)
                if is_access_token_rejection(response):
                    self.access_tokens.invalidate(access)
                    try:
                        access = await self.access_tokens.get()
                    except TokenRefused as exc:
                        return credentials_rejected(token, exc)
                    except TokenUnavailable as exc:
                        return retry_later(token, exc)
                    response = await self._post(body, access)
            except TransportError as exc:
                return Outcome(token, OutcomeKind.RETRY, reason=f"{TRANSPORT_PREFIX}{exc}")
        return classify_fcm_response(token, response)

    async def _post(self, body: bytes, access: str) -> HttpResponse:
        headers = {"authorization": f"Bearer {access}", "content-type": "application/json"}
        return await self._transport.post(self.send_url, headers, body, timeout=self._timeout)

    async def _fetch_access_token(self) -> AccessToken:
        return await fetch_jwt_bearer_token(
            self._token_transport,
            self._account,
            token_url=self.token_url,
            request_timeout=self._timeout,
        )
