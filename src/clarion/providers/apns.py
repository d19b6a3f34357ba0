"""Apple Push Notification service: HTTP/2 provider API with token (JWT) or certificate auth."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from clarion import jsontext
from clarion.providers.apns_jwt import MIN_TOKEN_AGE, ProviderTokenSigner, shared_signer
from clarion.providers.apns_payload import build_headers, encode_payload, local_rejection
from clarion.providers.base import (
    ApnsCredentials,
    Notification,
    Outcome,
    OutcomeKind,
    Part,
    Provider,
)
from clarion.providers.transport import (
    TRANSPORT_PREFIX,
    Transport,
    TransportError,
    create_transport,
)

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"

# Apple's reason strings (spec §1.6) by what the caller must do about them.
TOKEN_DEAD_REASONS = frozenset(
    {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
)
CREDENTIALS_REASONS = frozenset(
    {
        "InvalidProviderToken",
        "ExpiredProviderToken",  # only after one renewal did not help: the clock is off
        "MissingProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "UnrelatedKeyIdInToken",
        "BadEnvironmentKeyIdInToken",
        # The topic is part of the application's APNs settings, not of the message.
        "TopicDisallowed",
        "BadTopic",
        "MissingTopic",
    }
)
RETRY_REASONS = frozenset(
    {
        "TooManyRequests",
        "TooManyProviderTokenUpdates",
        "IdleTimeout",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
    }
)
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]+")


def is_device_token(token: str) -> bool:
    """True if ``token`` can be an APNs device token (bytes as hexadecimal digits, so an even
    number of them): any other is answered BadDeviceToken without a request."""
    return len(token) % 2 == 0 and _HEX_TOKEN.fullmatch(token) is not None


# Sends to more tokens than this run through this many workers instead of one task per token.
_MAX_TASKS_PER_SEND = 1000


def _apns_ids() -> Callable[[], str]:
    # Canonical lowercase UUIDs, unique per request: a random (version 4) prefix per process and
    # a counter. uuid4() per request costs a getrandom syscall, about a tenth of a push's CPU.
    prefix = str(uuid.uuid4())[:23]
    counter = itertools.count(int(time.time() * 1000) % (1 << 40))
    return lambda: f"{prefix}-{next(counter) & 0xFFFFFFFFFFFF:012x}"


_next_apns_id = _apns_ids()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(
    token: str,
    status: int,
    reason: str | None,
    *,
    retry_after: float | None = None,
    invalid_since: float | None = None,
) -> Outcome:
    """What an APNs answer means for this token and the caller."""
    if status == 200:
        return Outcome(token, OutcomeKind.DELIVERED, status=status)
    if reason in TOKEN_DEAD_REASONS:
        kind = OutcomeKind.TOKEN_DEAD
    elif reason in CREDENTIALS_REASONS:
        kind = OutcomeKind.CREDENTIALS_REJECTED
    elif reason in RETRY_REASONS:
        kind = OutcomeKind.RETRY
    elif status == 410:
        kind = OutcomeKind.TOKEN_DEAD
    elif status == 403:
        kind = OutcomeKind.CREDENTIALS_REJECTED
    elif status == 429 or status >= 500:
        kind = OutcomeKind.RETRY
    else:
        kind = OutcomeKind.FAILED
    return Outcome(
        token,
        kind,
        reason=reason or f"HTTP {status}",
        retry_after=retry_after if kind is OutcomeKind.RETRY else None,
        invalid_since=invalid_since if kind is OutcomeKind.TOKEN_DEAD else None,
        status=status,
    )


def _error(body: bytes) -> tuple[str | None, float | None]:
    """(reason, timestamp in epoch seconds) of an APNs error body; None for what is missing."""
    if not body:
        return None, None
    try:
        data = jsontext.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    reason, stamp = data.get("reason"), data.get("timestamp")
    seconds = None
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 0:
        seconds = stamp / 1000  # APNs sends milliseconds since the epoch
    return (reason if isinstance(reason, str) else None), seconds


def certificate_expiry(pem: bytes) -> datetime | None:
    """When the first certificate of ``pem`` expires (None if it holds none)."""
    try:
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc
    except ValueError:
        return None


def pkcs12_to_pem(data: bytes, password: bytes | None) -> bytes:
    """An APNs ``.p12`` certificate as the PEM certificate + key ``ApnsCredentials`` holds."""
    key, cert, _chain = pkcs12.load_key_and_certificates(data, password)
    if key is None or cert is None:
        raise ValueError("the PKCS#12 file holds no certificate with its private key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem


class ApnsProvider(Provider):
    """Sends to APNs for one bundle and environment over one multiplexed HTTP/2 transport."""

    name: ClassVar[str] = "apns"

    def __init__(
        self,
        credentials: ApnsCredentials,
        transport: Transport,
        *,
        base_url: str | None = None,
        owns_transport: bool = False,
    ) -> None:
        self._certificate_expires: datetime | None = None
        if credentials.private_key_pem is not None:
            if not credentials.key_id or not credentials.team_id:
                raise ValueError("APNs token auth needs key_id and team_id")
            self._signer: ProviderTokenSigner | None = shared_signer(
                key_id=credentials.key_id,
                team_id=credentials.team_id,
                private_key_pem=credentials.private_key_pem,
            )
        elif credentials.certificate_pem is not None:
            self._signer = None  # the TLS client certificate authenticates the connection
            # APNs refuses an expired certificate in the TLS handshake, which the client sees
            # as a closed connection (a retry, for ever): it is known here when that starts.
            self._certificate_expires = certificate_expiry(credentials.certificate_pem)
        else:
            raise ValueError("APNs credentials need a private key or a certificate")
        self.topic = credentials.bundle
        default_url = SANDBOX_URL if credentials.sandbox else PRODUCTION_URL
        self.base_url = (base_url or default_url).rstrip("/")
        self._device_url = f"{self.base_url}/3/device/"
        self._transport = transport
        self._owns_transport = owns_transport

    def __repr__(self) -> str:
        return f"ApnsProvider(topic={self.topic!r}, base_url={self.base_url!r})"

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        """Send to every token concurrently; one outcome per token, in order."""
        return await self.send_many(((notification, tokens),))

    async def send_many(self, parts: Sequence[Part]) -> list[Outcome]:
        """Every part's notification to its tokens, all concurrently: one request per token,
        each notification's payload and headers built once."""
        expired = self._certificate_expired()
        if expired is not None:
            return [
                Outcome(t, OutcomeKind.CREDENTIALS_REJECTED, reason=expired)
                for _, tokens in parts
                for t in tokens
            ]
        outcomes: list[Outcome | None] = []
        requests: list[tuple[int, str, Mapping[str, str], bytes]] = []
        # Parts that share one Notification object (the messages of a batch with the same
        # content) share its payload and headers: built once.
        built: dict[int, tuple[Mapping[str, str], bytes] | str] = {}
        for notification, tokens in parts:
            prepared = built.get(id(notification))
            if prepared is None:
                prepared = built[id(notification)] = self._prepare(notification)
            if isinstance(prepared, str):
                outcomes.extend(Outcome(t, OutcomeKind.FAILED, reason=prepared) for t in tokens)
                continue
            headers, body = prepared
            for token in tokens:
                requests.append((len(outcomes), token, headers, body))
                outcomes.append(None)
        if len(requests) == 1:  # the common case of a single push: no task to schedule
            index, token, headers, body = requests[0]
            outcomes[index] = await self._send_one(token, headers, body)
        elif len(requests) <= _MAX_TASKS_PER_SEND:
            answers = await asyncio.gather(*(self._send_one(*r[1:]) for r in requests))
            for (index, *_), answer in zip(requests, answers, strict=True):
                outcomes[index] = answer
        elif requests:
            pending = iter(requests)

            async def worker() -> None:
                for index, token, headers, body in pending:
                    outcomes[index] = await self._send_one(token, headers, body)

            await asyncio.gather(*(worker() for _ in range(_MAX_TASKS_PER_SEND)))
        return [o for o in outcomes if o is not None]

    def _certificate_expired(self) -> str | None:
        expires = self._certificate_expires
        if expires is None or expires.timestamp() > time.time():
            return None
        return f"CertificateExpired: the APNs certificate expired at {expires.isoformat()}"

    def _prepare(self, notification: Notification) -> tuple[Mapping[str, str], bytes] | str:
        """The headers and payload of a notification, or why it cannot be sent at all."""
        body = encode_payload(notification)
        rejected = local_rejection(notification, body)
        if rejected is not None:
            return rejected
        expires_at = notification.expires_at
        if expires_at is not None and expires_at.timestamp() < time.time():
            return "MessageExpired"
        return build_headers(notification, topic=self.topic), body

    async def _send_one(self, token: str, common: Mapping[str, str], body: bytes) -> Outcome:
        if not is_device_token(token):
            return Outcome(token, OutcomeKind.TOKEN_DEAD, reason="BadDeviceToken")
        headers = dict(common)
        headers["apns-id"] = _next_apns_id()
        signer = self._signer
        jwt = ""
        if signer is not None:
            jwt = signer.token()
            headers["authorization"] = "bearer " + jwt
        url = self._device_url + token
        try:
            response = await self._transport.post(url, headers, body)
            if response.status == 200:
                return Outcome(token, OutcomeKind.DELIVERED, status=200)
            reason, invalid_since = _error(response.body)
            renewed = None
            if reason == "ExpiredProviderToken" and signer is not None:
                renewed = signer.renew_expired(jwt)
            if renewed is not None:
                # The one resend this provider makes: with the renewed token, shared by every
                # request that saw the stale one.
                headers["authorization"] = "bearer " + renewed
                response = await self._transport.post(url, headers, body)
                if response.status == 200:
                    return Outcome(token, OutcomeKind.DELIVERED, status=200)
                reason, invalid_since = _error(response.body)
        except TransportError as exc:
            return Outcome(token, OutcomeKind.RETRY, reason=f"{TRANSPORT_PREFIX}{exc}")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if reason == "TooManyProviderTokenUpdates" and retry_after is None and signer is not None:
            # The connection stays throttled until our (unchanged) token has aged enough.
            retry_after = max(60.0, MIN_TOKEN_AGE - (time.time() - signer.issued_at))
        if response.status != 410:
            invalid_since = None  # only Unregistered carries Apple's timestamp
        return classify(
            token, response.status, reason, retry_after=retry_after, invalid_since=invalid_since
        )

    async def close(self) -> None:
        """Close the transport if this provider created it."""
        if self._owns_transport:
            await self._transport.close()


def create_apns_provider(
    credentials: ApnsCredentials,
    *,
    base_url: str | None = None,
    ca_file: str | None = None,
    timeout: float = 10.0,
    max_connections: int = 1000,
) -> ApnsProvider:
    """An ``ApnsProvider`` with its own transport (TLS client certificate for certificate auth)."""
    client_cert = credentials.certificate_pem if credentials.private_key_pem is None else None
    transport = create_transport(
        ca_file=ca_file,
        client_cert_pem=client_cert,
        timeout=timeout,
        max_connections=max_connections,
        http2_only=True,  # APNs speaks nothing else
    )
    return ApnsProvider(credentials, transport, base_url=base_url, owns_transport=True)
