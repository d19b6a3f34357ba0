"""An APNs emulator: HTTP/2 over TLS (ALPN ``h2``) on loopback that checks what Apple checks.

It verifies provider tokens (ES256 signature against the team's registered key, age, team per
connection, renewal rate) or TLS client certificates, the topic, the device token, the headers and
the payload size, and answers with Apple's status codes, ``apns-id`` and ``{"reason": ...}``.
Faults can be injected (see ``ApnsFaults``) and every request is recorded in ``received``.

    async with ApnsEmulator() as emu:
        emu.register_key(team_id, key_id, public_key)
        emu.register_bundle("com.example.app")
        ...  # point a provider at emu.url, trusting emu.ca_file
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from clarion.emulators.tls import CertificateAuthority, CertKey

MAX_PAYLOAD_BYTES = 4096
MAX_VOIP_PAYLOAD_BYTES = 5120
MAX_TOKEN_AGE = 3600
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
TOPIC_SUFFIXES = (
    ".voip",
    ".complication",
    ".pushkit.fileprovider",
    ".location-query",
    ".push-type.liveactivity",
    ".voip-ptt",
    ".push-type.widgets",
    ".push-type.controls",
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DEVICE_PATH = "/3/device/"
_CHECKED_HEADERS = frozenset(
    {
        "authorization",
        "apns-id",
        "apns-topic",
        "apns-push-type",
        "apns-priority",
        "apns-expiration",
        "apns-collapse-id",
    }
)


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """One request as the emulator saw it, and what it answered."""

    token: str
    headers: dict[str, str]
    body: bytes
    payload: Any  # the decoded JSON, None if the body was not JSON
    status: int
    reason: str | None
    connection: int  # which connection it came on (1, 2, ...)


@dataclass(slots=True)
class ApnsFaults:
    """Faults to inject; change them at any time, they apply to the next requests."""

    by_token: dict[str, tuple[int, str]] = field(default_factory=dict)  # token -> (status, reason)
    too_many_requests_rate: float = 0.0  # share of requests answered 429 TooManyRequests
    retry_after: int | None = 1  # Retry-After seconds on injected 429s
    server_error_rate: float = 0.0  # share of requests answered error_status / error_reason
    error_burst: int = 0  # the next N requests answer error_status / error_reason
    error_status: int = 503
    error_reason: str = "ServiceUnavailable"
    goaway_after: int | None = None  # GOAWAY (reason Shutdown) after N requests on a connection
    goaway_limit: int | None = None  # on at most this many connections (None: every one)
    drop_after: int | None = None  # abort the TCP connection on its Nth request, unanswered
    drop_limit: int | None = None
    delay: float = 0.0  # seconds before each answer


@dataclass(frozen=True, slots=True)
class _Verdict:
    team_id: str | None
    issued_at: int
    reason: str | None  # why the token is invalid, None if valid


class _Reject(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class ApnsEmulator:
    """A running APNs look-alike. Use as ``async with`` or call ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sandbox: bool = False,
        max_concurrent_streams: int = 1000,
        record: bool = True,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        token_update_min_interval: float = 20 * 60,
        strict_http2: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.sandbox = sandbox
        self.max_concurrent_streams = max_concurrent_streams
        self.record = record
        self.clock = clock
        self.token_update_min_interval = token_update_min_interval
        # False skips h2's validation of request header fields (faster, less faithful).
        self.strict_http2 = strict_http2
        self.faults = ApnsFaults()
        self.received: list[ReceivedPush] = []
        # Called with every request as it is answered (``clarion emulate`` shows pushes with it).
        self.on_receive: Callable[[ReceivedPush], None] | None = None
        self.request_count = 0
        self.connection_count = 0
        self.ca = CertificateAuthority("clarion APNs emulator CA")
        self.ca_pem = self.ca.cert_pem
        self._server_cert = self.ca.issue_server(("localhost", host))
        self._keys: dict[tuple[str, str], ec.EllipticCurvePublicKey] = {}
        self._bundles: dict[str, str | None] = {}  # bundle -> team allowed to use it (None: any)
        self._unregistered: dict[str, int] = {}  # token -> ms timestamp
        self._expired: set[str] = set()
        self._token_topics: dict[str, str] = {}
        self._verdicts: dict[str, _Verdict] = {}
        self._random = random.Random(seed)
        self._goaways = 0
        self._drops = 0
        self._server: asyncio.Server | None = None
        self._protocols: set[_ApnsServerProtocol] = set()
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file = ""

    # --- set-up -------------------------------------------------------------------------------
    def register_key(
        self, team_id: str, key_id: str, public_key: ec.EllipticCurvePublicKey | bytes
    ) -> None:
        """Accept provider tokens of ``team_id`` signed with the key ``key_id``."""
        if isinstance(public_key, bytes):
            loaded = serialization.load_pem_public_key(public_key)
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                raise ValueError("APNs keys are EC P-256")
            public_key = loaded
        self._keys[(team_id, key_id)] = public_key
        self._verdicts.clear()

    def register_bundle(self, bundle: str, team_id: str | None = None) -> None:
        """Accept pushes for ``bundle`` (and its suffixed topics) from ``team_id`` (or any team)."""
        self._bundles[bundle] = team_id

    def create_team_key(self, team_id: str, key_id: str) -> bytes:
        """Make and register a team key; returns the private ``.p8`` PEM for clarion's settings."""
        key = ec.generate_private_key(ec.SECP256R1())
        self.register_key(team_id, key_id, key.public_key())
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def issue_client_certificate(self, bundle: str) -> CertKey:
        """A client certificate for certificate auth, its subject UID the bundle (as Apple's)."""
        self.register_bundle(bundle)
        return self.ca.issue_client(f"Apple Push Services: {bundle}", uid=bundle)

    def unregister_device(self, token: str, timestamp_ms: int | None = None) -> None:
        """Answer ``410 Unregistered`` (with ``timestamp``) for this token from now on."""
        self._unregistered[token.lower()] = timestamp_ms or int(self.clock() * 1000)

    def expire_device(self, token: str) -> None:
        """Answer ``410 ExpiredToken`` for this token from now on."""
        self._expired.add(token.lower())

    def bind_device(self, token: str, topic: str) -> None:
        """The token belongs to ``topic``: other topics get ``400 DeviceTokenNotForTopic``."""
        self._token_topics[token.lower()] = topic

    @property
    def url(self) -> str:
        """The base URL to give a provider (``https://127.0.0.1:<port>``)."""
        return f"https://{self.host}:{self.port}"

    def delivered(self) -> list[ReceivedPush]:
        """The recorded requests that were answered 200."""
        return [r for r in self.received if r.status == 200]

    # --- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, then ``port`` holds it)."""
        self._tmpdir = tempfile.TemporaryDirectory(prefix="clarion-apns-emulator-")
        directory = Path(self._tmpdir.name)
        (directory / "ca.pem").write_bytes(self.ca_pem)
        (directory / "server.pem").write_bytes(self._server_cert.cert_pem)
        (directory / "server.key").write_bytes(self._server_cert.key_pem)
        self.ca_file = str(directory / "ca.pem")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        context.set_alpn_protocols(["h2"])
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate means certificate auth
        context.load_verify_locations(cadata=self.ca_pem.decode())
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ApnsServerProtocol(self), self.host, self.port, ssl=context, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            for protocol in list(self._protocols):
                protocol.abort()
            await self._server.wait_closed()
            self._server = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- checks -------------------------------------------------------------------------------
    def verify_provider_token(self, jwt: str) -> _Verdict:
        """Check an ES256 provider token's form and signature (cached: tokens are reused)."""
        verdict = self._verdicts.get(jwt)
        if verdict is None:
            verdict = self._verify(jwt)
            if len(self._verdicts) > 10_000:
                self._verdicts.clear()
            self._verdicts[jwt] = verdict
        return verdict

    def _verify(self, jwt: str) -> _Verdict:
        invalid = _Verdict(None, 0, "InvalidProviderToken")
        try:
            header_b64, claims_b64, signature_b64 = jwt.split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:
            return invalid
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return invalid
        team_id, key_id, issued_at = claims.get("iss"), header.get("kid"), claims.get("iat")
        if header.get("alg") != "ES256" or not isinstance(issued_at, int) or len(signature) != 64:
            return invalid
        key = self._keys.get((str(team_id), str(key_id)))
        if key is None:
            return invalid
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return invalid
        return _Verdict(str(team_id), issued_at, None)

    def topic_allowed(self, topic: str, team_id: str | None) -> bool:
        """Whether ``team_id`` (None: a certificate that already vouched) may push to ``topic``."""
        bundle = topic
        for suffix in TOPIC_SUFFIXES:
            if topic.endswith(suffix):
                bundle = topic[: -len(suffix)]
                break
        if bundle not in self._bundles:
            return False
        owner = self._bundles[bundle]
        return owner is None or team_id is None or owner == team_id

    def injected_fault(self, token: str) -> _Reject | None:
        """The fault to answer this request with, if any."""
        faults = self.faults
        chosen = faults.by_token.get(token)
        if chosen is not None:
            status, reason = chosen
            if reason == "Unregistered":
                return _Reject(status, reason, timestamp=int(self.clock() * 1000))
            return _Reject(status, reason)
        if faults.error_burst > 0:
            faults.error_burst -= 1
            return _Reject(faults.error_status, faults.error_reason)
        if faults.too_many_requests_rate and self._random.random() < faults.too_many_requests_rate:
            return _Reject(429, "TooManyRequests", retry_after=faults.retry_after)
        if faults.server_error_rate and self._random.random() < faults.server_error_rate:
            return _Reject(faults.error_status, faults.error_reason)
        return None

    def token_state(self, token: str, topic: str) -> _Reject | None:
        """Apple's answer for a token it knows to be dead or to belong elsewhere."""
        lowered = token.lower()
        if lowered in self._unregistered:
            return _Reject(410, "Unregistered", timestamp=self._unregistered[lowered])
        if lowered in self._expired:
            return _Reject(410, "ExpiredToken")
        bound = self._token_topics.get(lowered)
        if bound is not None and bound != topic:
            return _Reject(400, "DeviceTokenNotForTopic")
        return None

    def take_goaway(self, served: int) -> bool:
        """Whether a connection that has served ``served`` requests must now send GOAWAY."""
        f = self.faults
        if f.goaway_after is None or served < f.goaway_after:
            return False
        if f.goaway_limit is not None and self._goaways >= f.goaway_limit:
            return False
        self._goaways += 1
        return True

    def take_drop(self, served: int) -> bool:
        """Whether a connection on its ``served``-th request must be dropped unanswered."""
        f = self.faults
        if f.drop_after is None or served < f.drop_after:
            return False
        if f.drop_limit is not None and self._drops >= f.drop_limit:
            return False
        self._drops += 1
        return True


class _ConnectionAuth:
    """What APNs binds to a connection: its team and its current provider token."""

    __slots__ = ("certificate_topic", "issued_at", "team_id", "token")

    def __init__(self, certificate_topic: str | None) -> None:
        self.certificate_topic = certificate_topic
        self.team_id: str | None = None
        self.token: str | None = None
        self.issued_at = 0


class _ApnsServerProtocol(asyncio.Protocol):
    def __init__(self, emulator: ApnsEmulator) -> None:
        self.emu = emulator
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding="utf-8",
            validate_inbound_headers=emulator.strict_http2,
            normalize_inbound_headers=emulator.strict_http2,
            # Our own answers are well-formed: checking them again only costs time.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.served = 0
        self.closing = False
        self.number = 0
        self.auth = _ConnectionAuth(None)

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        # aioapns offers no ALPN at all and Apple still talks HTTP/2 to it: so does the emulator.
        if ssl_object is None or ssl_object.selected_alpn_protocol() not in ("h2", None):
            transport.abort()
            return
        self.emu._protocols.add(self)
        self.emu.connection_count += 1
        self.number = self.emu.connection_count
        self.auth = _ConnectionAuth(_certificate_uid(ssl_object.getpeercert()))
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.emu.max_concurrent_streams
            },
        )
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.emu._protocols.discard(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                # header_encoding="utf-8" makes every name and value a str.
                pairs = [(str(k), str(v)) for k, v in event.headers or ()]
                self.streams[event.stream_id] = (pairs, bytearray())
                if event.stream_ended is not None:
                    self.request_complete(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream[1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.streams:
                    self.request_complete(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.flush()
                self.abort()
                return
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- requests -----------------------------------------------------------------------------
    def request_complete(self, stream_id: int) -> None:
        header_list, body = self.streams.pop(stream_id)
        if self.closing:
            return  # after GOAWAY: not processed, the client must send it again elsewhere
        self.served += 1
        self.emu.request_count += 1
        if self.emu.take_drop(self.served):
            self.closing = True
            self.abort()
            return
        token, headers, status, reason, extra = self.handle(header_list, bytes(body))
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        if self.emu.record or self.emu.on_receive is not None:
            push = ReceivedPush(
                token, headers, bytes(body), _json(body), status, reason, self.number
            )
            if self.emu.record:
                self.emu.received.append(push)
            if self.emu.on_receive is not None:
                self.emu.on_receive(push)
        goaway = self.emu.take_goaway(self.served)
        if goaway:
            self.closing = True
        delay = self.emu.faults.delay
        if delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self.respond, stream_id, apns_id, status, reason, extra, goaway)
        else:
            self.respond(stream_id, apns_id, status, reason, extra, goaway)

    def respond(
        self,
        stream_id: int,
        apns_id: str,
        status: int,
        reason: str | None,
        extra: dict[str, Any],
        goaway: bool,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        response_headers = [(":status", str(status)), ("apns-id", apns_id)]
        if self.emu.sandbox:
            response_headers.append(("apns-unique-id", str(uuid.uuid4())))
        retry_after = extra.pop("retry_after", None)
        if retry_after is not None:
            response_headers.append(("retry-after", str(retry_after)))
        try:
            if reason is None:
                self.conn.send_headers(stream_id, response_headers, end_stream=True)
            else:
                payload = json.dumps({"reason": reason, **extra}).encode()
                response_headers.append(("content-type", "application/json"))
                response_headers.append(("content-length", str(len(payload))))
                self.conn.send_headers(stream_id, response_headers)
                self.conn.send_data(stream_id, payload, end_stream=True)
            if goaway:
                self.conn.close_connection(
                    additional_data=b'{"reason":"Shutdown"}', last_stream_id=stream_id
                )
        except h2.exceptions.H2Error:
            return  # the client reset the stream meanwhile
        self.flush()
        if goaway and self.transport is not None:
            self.transport.close()

    def handle(
        self, header_list: list[tuple[str, str]], body: bytes
    ) -> tuple[str, dict[str, str], int, str | None, dict[str, Any]]:
        """Apple's checks, in Apple's order; returns (token, headers, status, reason, extra)."""
        headers: dict[str, str] = {}
        duplicate = False
        for name, value in header_list:
            if name in headers and name in _CHECKED_HEADERS:
                duplicate = True
            headers[name] = value
        path = headers.get(":path", "")
        token = path[len(_DEVICE_PATH) :] if path.startswith(_DEVICE_PATH) else ""
        try:
            self.check(headers, path, token, body, duplicate)
        except _Reject as rejected:
            return token, headers, rejected.status, rejected.reason, rejected.extra
        return token, headers, 200, None, {}

    def check(
        self, headers: dict[str, str], path: str, token: str, body: bytes, duplicate: bool
    ) -> None:
        emu = self.emu
        if headers.get(":method") != "POST":
            raise _Reject(405, "MethodNotAllowed")
        if not path.startswith(_DEVICE_PATH):
            raise _Reject(404, "BadPath")
        if not token:
            raise _Reject(400, "MissingDeviceToken")
        if duplicate:
            raise _Reject(400, "DuplicateHeaders")
        team_id = self.authenticate(headers.get("authorization"))
        topic = headers.get("apns-topic") or self.auth.certificate_topic
        if not topic:
            raise _Reject(400, "MissingTopic")
        if not emu.topic_allowed(topic, team_id):
            raise _Reject(400, "TopicDisallowed")
        cert_topic = self.auth.certificate_topic
        if team_id is None and cert_topic is not None and not topic.startswith(cert_topic):
            raise _Reject(400, "TopicDisallowed")
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            raise _Reject(400, "InvalidPushType")
        priority = headers.get("apns-priority")
        if priority is not None and (
            priority not in ("1", "5", "10") or (push_type == "background" and priority == "10")
        ):
            raise _Reject(400, "BadPriority")
        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            raise _Reject(400, "BadMessageId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _Reject(400, "BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            raise _Reject(400, "BadCollapseId")
        if not _HEX.fullmatch(token):
            raise _Reject(400, "BadDeviceToken")
        if not body:
            raise _Reject(400, "PayloadEmpty")
        limit = MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES
        if len(body) > limit:
            raise _Reject(413, "PayloadTooLarge")
        fault = emu.injected_fault(token) or emu.token_state(token, topic)
        if fault is not None:
            raise fault

    def authenticate(self, authorization: str | None) -> str | None:
        """The team a provider token vouches for (None under certificate auth)."""
        auth = self.auth
        if not authorization:
            if auth.certificate_topic is not None:
                return None
            raise _Reject(403, "MissingProviderToken")
        scheme, _, jwt = authorization.partition(" ")
        if scheme.lower() != "bearer" or not jwt:
            raise _Reject(403, "InvalidProviderToken")
        if jwt == auth.token:
            issued_at, team_id = auth.issued_at, auth.team_id
        else:
            verdict = self.emu.verify_provider_token(jwt)
            if verdict.reason is not None:
                raise _Reject(403, verdict.reason)
            issued_at, team_id = verdict.issued_at, verdict.team_id
        now = self.emu.clock()
        if now - issued_at > MAX_TOKEN_AGE:
            raise _Reject(403, "ExpiredProviderToken")
        if issued_at > now + 60:
            raise _Reject(403, "InvalidProviderToken")
        if jwt != auth.token:
            if auth.team_id is not None and team_id != auth.team_id:
                raise _Reject(403, "InvalidProviderToken")  # one team per connection
            if auth.token is not None and (
                issued_at - auth.issued_at < self.emu.token_update_min_interval
            ):
                raise _Reject(429, "TooManyProviderTokenUpdates")
            auth.token, auth.issued_at, auth.team_id = jwt, issued_at, team_id
        return team_id


def _certificate_uid(peer: Any) -> str | None:
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "userId":
                return str(value)
    return None


def _json(body: bytes | bytearray) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
