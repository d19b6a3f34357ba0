"""A protocol-faithful HMS Push Kit emulator on loopback: the OAuth token endpoint and the v1/v2
send API with Push Kit's result codes.

The HTTP status that goes with each result code is not fully documented (see
``docs/providers.md``); the table below is our best reading and can be changed per test.

    async with HmsEmulator() as emu:
        emu.register_client("10001", "s3cret", project_id="388421841221")
        provider = HmsProvider(HmsCredentials("388421841221", "10001", "s3cret"), transport,
                               base_url=emu.url, token_url=emu.token_url)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

SEND_PATH = re.compile(r"^/(v1|v2)/([^/?]+)/messages:send$")
TOKEN_PATHS = frozenset({"/oauth2/v3/token", "/oauth2/v2/token"})
HMS_TOKEN = re.compile(r"^[A-Za-z0-9_:\-+/=.]{1,512}$")
TTL = re.compile(r"^\d+(\.\d{1,9})?s?$")
MAX_TTL = 1_296_000
MAX_TOKENS = 1000
MAX_BODY_BYTES = 4096
INVALID = "INVALID"  # a token error that makes the token illegal

# result code -> (HTTP status, msg)
RESULTS: dict[str, tuple[int, str]] = {
    "80000000": (200, "Success"),
    "80100000": (200, "Some tokens are right, the others are illegal"),
    "80100001": (400, "Some request parameters are incorrect"),
    "80100003": (400, "Illegal payload"),
    "80100013": (400, "The collapse_key message field is invalid"),
    "80200001": (401, "Oauth authentication error"),
    "80200003": (401, "Oauth Token expired"),
    "80300002": (403, "The current app does not have the permission to send messages"),
    "80300007": (400, "All the tokens are invalid"),
    "80300008": (413, "The message body size exceeds the default value"),
    "80300010": (400, "The number of tokens in the message body exceeds the default value"),
    "81000001": (500, "System internal error"),
}


@dataclass(frozen=True, slots=True)
class _Client:
    secret: str
    project_id: str | None


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class HmsReceived:
    """One accepted send request: the API version, the app or project id, the message."""

    version: str
    target_id: str
    message: dict[str, Any]
    delivered: tuple[str, ...]  # the tokens Push Kit accepted (illegal ones left out)


class BadMessage(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class HmsEmulator(LoopbackEmulator):
    """HMS Push Kit's send API and Huawei's OAuth token endpoint on one loopback port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_lifetime: int = 3600,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        record: bool = True,
    ) -> None:
        self.faults = faults or Faults()
        self.record = record  # False: count accepted messages without keeping them (benchmarks)
        self.accepted = 0
        self.token_lifetime = token_lifetime
        self.results = dict(RESULTS)
        self.received: list[HmsReceived] = []
        self.send_requests = 0
        self.tokens_issued = 0
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._grants: dict[str, _Grant] = {}
        self._request_ids = itertools.count(1)
        self._server = LoopbackHttpServer(self._handle, host=host, port=port)

    @property
    def token_url(self) -> str:
        return f"{self._server.url}/oauth2/v3/token"

    def register_client(
        self, client_id: str, client_secret: str, *, project_id: str | None = None
    ) -> None:
        """An OAuth client (its id is the app id for v1) allowed to send for ``project_id``."""
        self._clients[client_id] = _Client(client_secret, project_id)

    def expire_access_tokens(self) -> None:
        self._grants = {value: _Grant(g.client_id, 0.0) for value, g in self._grants.items()}

    def tokens_delivered(self) -> list[str]:
        return [token for r in self.received for token in r.delivered]

    # -- routing ---------------------------------------------------------------------------

    async def _handle(self, request: HttpRequest) -> HttpAnswer | None:
        if request.path in TOKEN_PATHS and request.method == "POST":
            return self._token_endpoint(request)
        match = SEND_PATH.match(request.path)
        if match is None or request.method != "POST":
            return HttpAnswer(404, b"Not Found", content_type="text/plain")
        self.send_requests += 1
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        fault = self.faults.next_fault()
        if fault == "drop":
            return None
        if fault is not None:
            return self._fault_answer(fault)
        version, target = match.group(1), urllib.parse.unquote(match.group(2))
        return self._send(version, target, request)

    def _fault_answer(self, fault: str) -> HttpAnswer:
        status = self.faults.error_burst_status
        if fault == "rate":
            status = self.faults.rate_limit_status or 503
        if status == 502:
            return HttpAnswer(502, BAD_GATEWAY_HTML, content_type="text/html; charset=UTF-8")
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            headers["retry-after"] = str(self.faults.retry_after)
        if status in (429, 503):
            return self._result("81000001", "Traffic control, try again later", status, headers)
        return self._result("81000001", None, status, headers)

    def _result(
        self,
        code: str,
        msg: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        default_status, default_msg = self.results.get(code, (400, "Error"))
        body = {
            "code": code,
            "msg": msg if msg is not None else default_msg,
            "requestId": f"{int(self._clock() * 1000)}{next(self._request_ids):06d}",
        }
        return json_answer(status or default_status, body, headers)

    # -- OAuth -----------------------------------------------------------------------------

    def _token_endpoint(self, request: HttpRequest) -> HttpAnswer:
        if self.faults.token_endpoint_status is not None:
            status = self.faults.token_endpoint_status
            return json_answer(status, {"error": 1203, "error_description": "server busy"})
        form = parse_form(request.body)
        if form.get("grant_type") != "client_credentials":
            return json_answer(400, {"error": 1102, "error_description": "unsupported grant type"})
        client_id = form.get("client_id", "")
        client = self._clients.get(client_id)
        secret = form.get("client_secret", "")
        if client is None or not secrets.compare_digest(client.secret, secret):
            return json_answer(
                400, {"error": 1101, "sub_error": 20003, "error_description": "invalid client"}
            )
        value = secrets.token_urlsafe(48).replace("-", "/")
        self._grants[value] = _Grant(client_id, self._clock() + self.token_lifetime)
        self.tokens_issued += 1
        return json_answer(
            200,
            {"access_token": value, "expires_in": self.token_lifetime, "token_type": "Bearer"},
        )

    # -- messages:send ---------------------------------------------------------------------

    def _send(self, version: str, target: str, request: HttpRequest) -> HttpAnswer:
        access = bearer(request.headers)
        grant = self._grants.get(access) if access else None
        if grant is None:
            return self._result("80200001")
        if grant.expires_at <= self._clock():
            return self._result("80200003")
        client = self._clients[grant.client_id]
        allowed = grant.client_id if version == "v1" else client.project_id
        if target != allowed:
            return self._result("80200001")
        try:
            message, tokens = validate_message(request.body)
        except BadMessage as bad:
            return self._result(bad.code, f"{self.results[bad.code][1]}, {bad.detail}")
        errors = {token: self.faults.token_errors.get(token) for token in tokens}
        for error in errors.values():
            if error is not None and error != INVALID:
                return self._result(error)
        illegal = [t for t in tokens if errors[t] == INVALID or not HMS_TOKEN.fullmatch(t)]
        if len(illegal) == len(tokens):
            return self._result("80300007")
        delivered = tuple(t for t in tokens if t not in set(illegal))
        self.accepted += len(delivered)
        if self.record:
            self.received.append(HmsReceived(version, target, message, delivered))
        if not illegal:
            return self._result("80000000")
        detail = {"success": len(delivered), "failure": len(illegal), "illegal_tokens": illegal}
        return self._result("80100000", json.dumps(detail))


def validate_message(body: bytes) -> tuple[dict[str, Any], list[str]]:
    """Check a v1/v2 send body as Push Kit does; return the message and its tokens."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadMessage("80100003", "body is not JSON") from None
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict):
        raise BadMessage("80100003", "message is missing")
    targets = [name for name in ("token", "topic", "condition") if name in message]
    if len(targets) != 1:
        raise BadMessage("80100001", "exactly one of token, topic, condition")
    tokens = message.get("token")
    if targets == ["token"]:
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS:
            raise BadMessage("80300010", "token must be a list of 1 to 1000 tokens")
        if not all(isinstance(token, str) for token in tokens):
            raise BadMessage("80100003", "tokens are strings")
    else:
        tokens = []
    if "data" in message and not isinstance(message["data"], str):
        raise BadMessage("80100003", "data must be a string")
    android = message.get("android")
    if android is not None:
        _check_android(android)
    # As sent: compact JSON in UTF-8 (a Cyrillic letter is 2 bytes, not 6 escaped).
    size = len(_compact({k: v for k, v in message.items() if k != "token"}))
    if size > MAX_BODY_BYTES:
        raise BadMessage("80300008", f"{size} bytes")
    return message, tokens


def _check_android(android: Any) -> None:
    if not isinstance(android, dict):
        raise BadMessage("80100003", "android must be an object")
    urgency = android.get("urgency")
    if urgency is not None and urgency not in ("HIGH", "NORMAL"):
        raise BadMessage("80100003", "urgency must be HIGH or NORMAL")
    ttl = android.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, str) or not TTL.fullmatch(ttl) or float(ttl.rstrip("s")) > MAX_TTL:
            raise BadMessage("80100003", "ttl is invalid")
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and (
        not isinstance(collapse_key, int)
        or isinstance(collapse_key, bool)
        or not -1 <= collapse_key <= 100
    ):
        raise BadMessage("80100013", "collapse_key must be an integer from -1 to 100")
    if "data" in android and not isinstance(android["data"], str):
        raise BadMessage("80100003", "android.data must be a string")
    notification = android.get("notification")
    if notification is not None:
        if not isinstance(notification, dict):
            raise BadMessage("80100003", "android.notification must be an object")
        click_action = notification.get("click_action")
        if not isinstance(click_action, dict) or click_action.get("type") not in (1, 2, 3, 4):
            raise BadMessage("80100003", "click_action is mandatory")
        for name in ("title_loc_args", "body_loc_args"):
            if name in notification and not notification.get(name.replace("args", "key")):
                raise BadMessage("80100003", f"{name} needs its loc key")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
