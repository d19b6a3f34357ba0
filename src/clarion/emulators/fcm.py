"""A protocol-faithful FCM HTTP v1 emulator on loopback: the OAuth token endpoint and the send API.

The token endpoint verifies the service account's RS256 assertion the way Google does (signature
against the registered key, ``aud`` = Google's token URL, scope, a lifetime of at most an hour) and
issues opaque access tokens; the send endpoint checks the bearer token, the project and the message
shape, and answers with the v1 error model. Faults can be injected and every accepted message is
recorded. The small HTTP/1.1 server and the fault switches are in ``emulators/http.py``.

    async with FcmEmulator() as emu:
        account = make_service_account("demo-project", token_uri=emu.token_url)
        emu.register_service_account(account)
        provider = FcmProvider(FcmCredentials("demo-project", account), transport,
                               base_url=emu.url)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from clarion.emulators.http import (
    BAD_GATEWAY_HTML,
    Faults,
    HttpAnswer,
    HttpRequest,
    LoopbackEmulator,
    LoopbackHttpServer,
    bearer,
    json_answer,
    parse_form,
)
from clarion.providers.oauth import (
    FCM_SCOPE,
    GOOGLE_TOKEN_AUDIENCE,
    JWT_BEARER_GRANT,
    b64url_decode,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Test service accounts.


def make_service_account(
    project_id: str = "clarion-test",
    *,
    token_uri: str = GOOGLE_TOKEN_AUDIENCE,
    client_email: str | None = None,
) -> dict[str, str]:
    """A fresh service-account JSON object with a new 2048-bit RSA key, for tests and emulation."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    email = client_email or f"clarion-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


# ---------------------------------------------------------------------------------------------
# The FCM emulator.

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SEND_PATH = re.compile(r"^/v1/projects/([^/?]+)/messages:send$")
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{1,4096}$")
TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
MAX_TTL = 2_419_200
MAX_MESSAGE_BYTES = 4096
CLOCK_SKEW = 300

UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
# errorCode -> (HTTP status, google.rpc status, message), as captured from the real service.
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'messages'."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
    ),
}
STATUS_TO_CODE = {500: "INTERNAL", 503: "UNAVAILABLE", 429: "QUOTA_EXCEEDED"}

MESSAGE_FIELDS = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options"}
    | {"token", "topic", "condition", "fid"}
)
ANDROID_FIELDS = frozenset(
    {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification"}
    | {"fcm_options", "direct_boot_ok", "bandwidth_constrained_ok", "restricted_satellite_ok"}
)
ANDROID_NOTIFICATION_FIELDS = frozenset(
    {"title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key"}
    | {"body_loc_args", "title_loc_key", "title_loc_args", "channel_id", "ticker", "sticky"}
    | {"event_time", "local_only", "notification_priority", "default_sound", "image"}
    | {"default_vibrate_timings", "default_light_settings", "vibrate_timings", "visibility"}
    | {"light_settings", "notification_count", "proxy"}
)
RESERVED_DATA_KEYS = frozenset({"from", "message_type"})  # and any key starting google / gcm


class BadMessage(Exception):
    def __init__(self, field_name: str, description: str) -> None:
        super().__init__(description)
        self.field = field_name
        self.description = description


def snake(name: str) -> str:
    """proto3 JSON accepts lowerCamelCase and snake_case field names alike."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _snake_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    return {snake(key): item for key, item in value.items()}


@dataclass(frozen=True, slots=True)
class _Account:
    public_key: rsa.RSAPublicKey
    key_id: str | None
    project_id: str


@dataclass(frozen=True, slots=True)
class _Grant:
    project_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class FcmReceived:
    """One message the send endpoint accepted (field names normalised to snake_case)."""

    project_id: str
    message: dict[str, Any]
    validate_only: bool

    @property
    def token(self) -> str | None:
        token = self.message.get("token")
        return token if isinstance(token, str) else None


class FcmEmulator(LoopbackEmulator):
    """The FCM v1 send API and Google's OAuth token endpoint on one loopback port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_lifetime: int = 3599,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        record: bool = True,
    ) -> None:
        self.faults = faults or Faults()
        self.record = record  # False: count accepted messages without keeping them (benchmarks)
        self.accepted = 0
        self.token_lifetime = token_lifetime
        self.received: list[FcmReceived] = []
        self.send_requests = 0
        self.tokens_issued = 0
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self._grants: dict[str, _Grant] = {}
        self._message_ids = itertools.count(1)
        # FCM's project quota: at most this many messages per rolling minute (None: unlimited).
        self.quota_per_minute: int | None = None
        self._quota_window: deque[float] = deque()
        self._server = LoopbackHttpServer(self._handle, host=host, port=port)

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint: a service account's ``token_uri``."""
        return f"{self._server.url}/token"

    def register_service_account(
        self, info: Mapping[str, Any], *, project_id: str | None = None
    ) -> None:
        """Trust ``info``'s key for its ``client_email``, allowed to send for ``project_id``."""
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        public = private.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("service account key is not RSA")
        project = project_id or info.get("project_id")
        if not project:
            raise ValueError("a project id is needed")
        self._accounts[info["client_email"]] = _Account(
            public, info.get("private_key_id"), str(project)
        )

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now expired (the next send gets a 401)."""
        self._grants = {value: _Grant(g.project_id, 0.0) for value, g in self._grants.items()}

    def messages_to(self, token: str) -> list[dict[str, Any]]:
        return [r.message for r in self.received if r.token == token]

    # -- routing ---------------------------------------------------------------------------

    async def _handle(self, request: HttpRequest) -> HttpAnswer | None:
        if request.path == "/token" and request.method == "POST":
            return self._token_endpoint(request)
        match = SEND_PATH.match(request.path)
        if match is None:
            return _google_error(404, "NOT_FOUND", "Requested entity was not found.")
        if request.method != "POST":
            return _google_error(405, "METHOD_NOT_ALLOWED", "Method not allowed.")
        self.send_requests += 1
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        fault = self.faults.next_fault()
        if fault == "drop":
            return None
        if fault is not None:
            return self._fault_answer(fault)
        return self._send(urllib.parse.unquote(match.group(1)), request)

    def _fault_answer(self, fault: str) -> HttpAnswer:
        status = self.faults.error_burst_status
        if fault == "rate":
            status = self.faults.rate_limit_status or 429
        if status == 502:
            return HttpAnswer(502, BAD_GATEWAY_HTML, content_type="text/html; charset=UTF-8")
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            headers["retry-after"] = str(self.faults.retry_after)
        code = STATUS_TO_CODE.get(status, "UNSPECIFIED_ERROR")
        _, rpc_status, message = FCM_ERRORS.get(code, (status, "UNKNOWN", "Unknown error."))
        return _fcm_error(status, rpc_status, message, code, headers=headers)

    # -- OAuth -----------------------------------------------------------------------------

    def _token_endpoint(self, request: HttpRequest) -> HttpAnswer:
        if self.faults.token_endpoint_status is not None:
            status = self.faults.token_endpoint_status
            return json_answer(status, {"error": "internal_failure", "error_description": ""})
        form = parse_form(request.body)
        if form.get("grant_type") != JWT_BEARER_GRANT:
            grant = form.get("grant_type", "")
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
        try:
            project_id = self._verify_assertion(form.get("assertion", ""))
        except _GrantRefused as refused:
            return _oauth_error(refused.error, refused.description)
        value = f"ya29.emu.{secrets.token_urlsafe(48)}"
        self._grants[value] = _Grant(project_id, self._clock() + self.token_lifetime)
        self.tokens_issued += 1
        return json_answer(
            200,
            {"access_token": value, "expires_in": self.token_lifetime, "token_type": "Bearer"},
        )

    def _verify_assertion(self, assertion: str) -> str:
        try:
            header_part, claims_part, signature_part = assertion.split(".")
            header = json.loads(b64url_decode(header_part))
            claims = json.loads(b64url_decode(claims_part))
            signature = b64url_decode(signature_part)
        except ValueError:
            raise _GrantRefused("invalid_request", "Invalid JWT.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _GrantRefused("invalid_request", "Invalid JWT.")
        if header.get("alg") != "RS256":
            raise _GrantRefused("invalid_grant", "Invalid JWT Signature.")
        account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            raise _GrantRefused("invalid_grant", "Invalid grant: account not found")
        signed = f"{header_part}.{claims_part}".encode("ascii")
        try:
            account.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _GrantRefused("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            raise _GrantRefused("invalid_grant", "Invalid JWT: Failed audience check.")
        self._check_lifetime(claims)
        scopes = str(claims.get("scope", "")).split()
        if FCM_SCOPE not in scopes and CLOUD_PLATFORM_SCOPE not in scopes:
            raise _GrantRefused(
                "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        return account.project_id

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        iat, exp, now = claims.get("iat"), claims.get("exp"), self._clock()
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > 3600
            or iat > now + CLOCK_SKEW
            or exp < now - CLOCK_SKEW
        ):
            raise _GrantRefused(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )

    # -- messages:send ---------------------------------------------------------------------

    def _send(self, project_id: str, request: HttpRequest) -> HttpAnswer:
        access = bearer(request.headers)
        grant = self._grants.get(access) if access else None
        if grant is None or grant.expires_at <= self._clock():
            return _google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE)
        if grant.project_id != project_id:
            return _google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project_id}' "
                "(or it may not exist).",
            )
        try:
            payload = json.loads(request.body)
            if not isinstance(payload, dict):
                raise BadMessage("", "Invalid JSON payload received.")
            validate_only = bool(payload.get("validate_only", payload.get("validateOnly", False)))
            message = validate_message(payload.get("message"))
        except ValueError:
            return _invalid_argument("", "Invalid JSON payload received.")
        except BadMessage as bad:
            return _invalid_argument(bad.field, bad.description)
        wait = self._quota_wait()
        if wait is not None:
            status, rpc_status, text = FCM_ERRORS["QUOTA_EXCEEDED"]
            headers = {"retry-after": str(wait)}
            return _fcm_error(status, rpc_status, text, "QUOTA_EXCEEDED", headers=headers)
        token = message.get("token")
        if isinstance(token, str):
            error = self.faults.token_errors.get(token)
            if error is not None:
                return self._token_error(error)
        self.accepted += 1
        if self.record:
            self.received.append(FcmReceived(project_id, message, validate_only))
        message_id = "fake_message_id" if validate_only else f"0:{next(self._message_ids)}"
        return json_answer(200, {"name": f"projects/{project_id}/messages/{message_id}"})

    def _quota_wait(self) -> int | None:
        """Seconds until the rolling-minute quota has room again; None if it has room now."""
        if self.quota_per_minute is None:
            return None
        now = self._clock()
        window = self._quota_window
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.quota_per_minute:
            return max(1, int(window[0] + 60 - now + 0.999))
        window.append(now)
        return None

    def _token_error(self, code: str) -> HttpAnswer:
        status, rpc_status, message = FCM_ERRORS[code]
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            headers["retry-after"] = str(self.faults.retry_after)
        if code == "INVALID_ARGUMENT":
            return _invalid_argument("message.token", "Invalid registration token", message)
        return _fcm_error(status, rpc_status, message, code, headers=headers)


class _GrantRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def validate_message(raw: Any) -> dict[str, Any]:
    """Check a v1 ``message`` the way FCM does; return it with snake_case field names."""
    if not isinstance(raw, dict):
        raise BadMessage("message", "Recipient of the message is not set.")
    message = _snake_keys(raw)
    _no_unknown(message, MESSAGE_FIELDS, "message")
    targets = [name for name in ("token", "topic", "condition", "fid") if message.get(name)]
    if not targets:
        raise BadMessage("message", "Recipient of the message is not set.")
    if len(targets) > 1:
        raise BadMessage("message", "Exactly one of token, topic, condition or fid must be set.")
    token = message.get("token")
    if token is not None and (not isinstance(token, str) or not FCM_TOKEN.fullmatch(token)):
        raise BadMessage("message.token", "Invalid registration token")
    _check_data(message.get("data"), "message.data")
    notification = message.get("notification")
    if notification is not None:
        if not isinstance(notification, dict):
            raise BadMessage("message.notification", "Invalid value.")
        message["notification"] = _snake_keys(notification)
    android = message.get("android")
    if android is not None:
        message["android"] = _check_android(android)
    # As sent: compact JSON in UTF-8 (a Cyrillic letter is 2 bytes, not 6 escaped).
    size = len(_compact({k: v for k, v in message.items() if k != "token"}))
    if size > MAX_MESSAGE_BYTES:
        raise BadMessage("message", "Message is too big")
    return message


def _check_android(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadMessage("message.android", "Invalid value.")
    android = _snake_keys(raw)
    _no_unknown(android, ANDROID_FIELDS, "message.android")
    priority = android.get("priority")
    if priority is not None and str(priority).upper() not in ("HIGH", "NORMAL"):
        raise BadMessage("message.android.priority", "Invalid value at 'message.android.priority'")
    ttl = android.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, str) or not TTL.fullmatch(ttl) or float(ttl[:-1]) > MAX_TTL:
            raise BadMessage("message.android.ttl", "Invalid value at 'message.android.ttl'")
    _check_data(android.get("data"), "message.android.data")
    notification = android.get("notification")
    if notification is not None:
        if not isinstance(notification, dict):
            raise BadMessage("message.android.notification", "Invalid value.")
        shown = _snake_keys(notification)
        _no_unknown(shown, ANDROID_NOTIFICATION_FIELDS, "message.android.notification")
        for name in ("title_loc_args", "body_loc_args"):
            args = shown.get(name)
            if args is not None and not (
                isinstance(args, list) and all(isinstance(a, str) for a in args)
            ):
                raise BadMessage(f"message.android.notification.{name}", "Invalid value.")
        android["notification"] = shown
    return android


def _check_data(data: Any, where: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise BadMessage(where, "Invalid value.")
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            raise BadMessage(f"{where}[{index}].value", "Invalid value: data values are strings.")
        if key in RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
            raise BadMessage(f"{where}[{index}].key", f"Invalid data key: {key}")


def _no_unknown(value: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for name in value:
        if name not in known:
            raise BadMessage(
                where,
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': "
                "Cannot find field.",
            )


def _google_error(
    status: int, rpc_status: str, message: str, *, details: list[Any] | None = None
) -> HttpAnswer:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    return json_answer(status, {"error": error})


def _fcm_error(
    status: int,
    rpc_status: str,
    message: str,
    error_code: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> HttpAnswer:
    detail = {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": error_code,
    }
    error = {"code": status, "message": message, "status": rpc_status, "details": [detail]}
    return json_answer(status, {"error": error}, headers)


def _invalid_argument(
    field_name: str, description: str, message: str = "Request contains an invalid argument."
) -> HttpAnswer:
    details: list[Any] = [
        {
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "INVALID_ARGUMENT",
        }
    ]
    if field_name:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_name, "description": description}],
            }
        )
    return _google_error(400, "INVALID_ARGUMENT", message, details=details)


def _oauth_error(error: str, description: str) -> HttpAnswer:
    return json_answer(400, {"error": error, "error_description": description})


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
