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
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from clarion.emulators.apns_connection import (
    ApnsServerProtocol,
    ReceivedPush,
    Rejection,
)
from clarion.emulators.tls import CertificateAuthority, CertKey

__all__ = ["ApnsEmulator", "ApnsFaults", "ReceivedPush"]

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
        single_stream_until_authenticated: bool = False,
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
        # As APNs: SETTINGS_MAX_CONCURRENT_STREAMS is 1 on a token-auth connection until its
        # first valid provider token, then max_concurrent_streams. A client that opens more
        # streams before it has seen the SETTINGS loses the connection.
        self.single_stream_until_authenticated = single_stream_until_authenticated
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
        self._protocols: set[ApnsServerProtocol] = set()
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
            lambda: ApnsServerProtocol(self), self.host, self.port, ssl=context, backlog=1024
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

    def connection_opened(self, connection: ApnsServerProtocol) -> None:
        self._protocols.add(connection)

    def connection_closed(self, connection: ApnsServerProtocol) -> None:
        self._protocols.discard(connection)

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

    def injected_fault(self, token: str) -> Rejection | None:
        """The fault to answer this request with, if any."""
        faults = self.faults
        chosen = faults.by_token.get(token)
        if chosen is not None:
            status, reason = chosen
            if reason == "Unregistered":
                return Rejection(status, reason, timestamp=int(self.clock() * 1000))
            return Rejection(status, reason)
        if faults.error_burst > 0:
            faults.error_burst -= 1
            return Rejection(faults.error_status, faults.error_reason)
        if faults.too_many_requests_rate and self._random.random() < faults.too_many_requests_rate:
            return Rejection(429, "TooManyRequests", retry_after=faults.retry_after)
        if faults.server_error_rate and self._random.random() < faults.server_error_rate:
            return Rejection(faults.error_status, faults.error_reason)
        return None

    def token_state(self, token: str, topic: str) -> Rejection | None:
        """Apple's answer for a token it knows to be dead or to belong elsewhere."""
        lowered = token.lower()
        if lowered in self._unregistered:
            return Rejection(410, "Unregistered", timestamp=self._unregistered[lowered])
        if lowered in self._expired:
            return Rejection(410, "ExpiredToken")
        bound = self._token_topics.get(lowered)
        if bound is not None and bound != topic:
            return Rejection(400, "DeviceTokenNotForTopic")
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
