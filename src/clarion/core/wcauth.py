"""WalletConnect authentication: relay Ed25519 signatures, client did:key JWTs, tenant JWTs.

Pure functions over bytes and a clock value; each raises ``Unauthorized`` with a reason that
names what is wrong, never the secret. The JWS checks are small enough to write here on
``cryptography`` and ``hmac`` rather than to add a JWT library with more algorithms than we
accept (only ``EdDSA`` and ``HS256``, named in the header, no ``none``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clarion import jsontext
from clarion.errors import ClarionError, Unauthorized

DID_KEY_PREFIX = "did:key:"
_ED25519_MULTICODEC = b"\xed\x01"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(_BASE58)}
JWT_LEEWAY = 30.0  # seconds of clock skew tolerated on exp / iat


def relay_public_key(hex_key: str) -> Ed25519PublicKey:
    """The relay's Ed25519 public key from its hex form (a setting)."""
    try:
        raw = bytes.fromhex(hex_key.strip())
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ClarionError(
            "CLARION_WC_RELAY_PUBLIC_KEY must be a hex Ed25519 public key (64 hex digits)"
        ) from None


def signed_text(timestamp: str, body: bytes) -> bytes:
    """What the relay signs: ``{timestamp}.{body length}.{body}``."""
    return f"{timestamp}.{len(body)}.".encode() + body


def verify_relay_signature(
    key: Ed25519PublicKey,
    body: bytes,
    signature_hex: str | None,
    timestamp: str | None,
    *,
    now: float,
    max_age: float,
) -> None:
    """Raise Unauthorized unless the relay signed ``body`` at a recent ``timestamp``."""
    if not signature_hex or not timestamp:
        raise Unauthorized("Missing X-Ed25519-Signature or X-Ed25519-Timestamp header.")
    # Unix seconds in decimal digits only: int() would also take signs, spaces and
    # underscores, and a number too large to compare with the clock.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise Unauthorized("Malformed relay signature or timestamp.")
    signed_at = int(timestamp)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise Unauthorized("Malformed relay signature or timestamp.") from None
    if abs(now - signed_at) > max_age:
        raise Unauthorized("Relay signature timestamp is too old or in the future.")
    try:
        key.verify(signature, signed_text(timestamp, body))
    except InvalidSignature:
        raise Unauthorized("Relay signature does not verify.") from None


def base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise ValueError("not base58")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + body


def base58_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + out


def did_key(public_key: bytes) -> str:
    """The ``did:key`` of a raw 32-byte Ed25519 public key."""
    return DID_KEY_PREFIX + "z" + base58_encode(_ED25519_MULTICODEC + public_key)


def did_key_public_key(did: str) -> Ed25519PublicKey:
    """The Ed25519 key a ``did:key:z6Mk...`` identifier encodes."""
    if not did.startswith(DID_KEY_PREFIX + "z"):
        raise Unauthorized("JWT issuer must be an Ed25519 did:key.")
    try:
        raw = base58_decode(did[len(DID_KEY_PREFIX) + 1 :])
    except ValueError:
        raise Unauthorized("JWT issuer is not a valid did:key.") from None
    if len(raw) != 34 or not raw.startswith(_ED25519_MULTICODEC):
        raise Unauthorized("JWT issuer must be an Ed25519 did:key.")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise Unauthorized("Malformed JWT.") from None


def _split(token: str, alg: str) -> tuple[bytes, dict[str, Any], bytes]:
    """(signing input, claims, signature) of a compact JWS whose header names ``alg``."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthorized("Malformed JWT.")
    try:
        header = jsontext.loads(_b64url(parts[0]))
        claims = jsontext.loads(_b64url(parts[1]))
    except ValueError:
        raise Unauthorized("Malformed JWT.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthorized("Malformed JWT.")
    if header.get("alg") != alg:
        raise Unauthorized(f"JWT algorithm must be {alg}.")
    return f"{parts[0]}.{parts[1]}".encode(), claims, _b64url(parts[2])


# A NumericDate beyond this (year 10000) is refused: it is no time, and Python's int is
# unbounded (10**400 would not even convert to a float).
_MAX_NUMERIC_DATE = 253_402_300_800


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A time claim (RFC 7519 NumericDate) in seconds, None if absent."""
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Unauthorized(f"JWT claim {name} must be a number of seconds.")
    if not -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE:
        raise Unauthorized(f"JWT claim {name} is out of range.")
    return float(value)


def _check_times(claims: dict[str, Any], now: float) -> None:
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf")
    if exp is None:
        raise Unauthorized("JWT has no expiry (exp).")
    if exp + JWT_LEEWAY < now:
        raise Unauthorized("JWT has expired.")
    if iat is not None and iat - JWT_LEEWAY > now:
        raise Unauthorized("JWT is issued in the future.")
    if nbf is not None and nbf - JWT_LEEWAY > now:
        raise Unauthorized("JWT is not valid yet (nbf).")


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def verify_client_jwt(token: str, *, client_id: str, audience: str, now: float) -> None:
    """A did:key EdDSA JWT issued by ``client_id``'s own key, for this server."""
    signing_input, claims, signature = _split(token, "EdDSA")
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise Unauthorized("JWT has no issuer (iss).")
    if issuer.removeprefix(DID_KEY_PREFIX) != client_id:
        raise Unauthorized("JWT issuer is not the client being registered.")
    key = did_key_public_key(issuer)
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        raise Unauthorized("JWT signature does not verify.") from None
    _check_times(claims, now)
    if audience.rstrip("/") not in [a.rstrip("/") for a in _audiences(claims)]:
        raise Unauthorized("JWT audience is not this server.")


def verify_tenant_jwt(token: str, *, secret: bytes, tenant_id: str, now: float) -> None:
    """An HS256 JWT signed with the shared secret whose subject is ``tenant_id``."""
    signing_input, claims, signature = _split(token, "HS256")
    expected = hmac.new(secret, signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("JWT signature does not verify.")
    _check_times(claims, now)
    if claims.get("sub") != tenant_id:
        raise Unauthorized("JWT subject is not this tenant.")
