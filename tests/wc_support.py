"""Helpers for the WalletConnect tests: request bodies, the noop provider, real keys, JWTs."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from clarion.core.walletconnect import DeliverySender
from clarion.providers.noop import NoopProvider

DEFAULT_TENANT = "0000-0000-0000-0000"


def encrypted_push(message_id: str, blob: str = "c2VhbGVkIGJveA==", topic: str = "t" * 64) -> dict:
    return {"id": message_id, "payload": {"topic": topic, "flags": 1, "blob": blob}}


def cleartext_blob(title: str = "Hello", body: str = "World", **extra: Any) -> str:
    return base64.b64encode(json.dumps({"title": title, "body": body, **extra}).encode()).decode()


def register_body(client_id: str, token: str, push_type: str = "noop", **kw: Any) -> dict:
    return {"client_id": client_id, "type": push_type, "token": token, **kw}


def noop_provider(services: Any) -> NoopProvider:
    """The real noop provider behind the services' WalletConnect sender."""
    sender = services.walletconnect.sender
    assert isinstance(sender, DeliverySender)
    return sender.noop


# --- keys --------------------------------------------------------------------------------


def ed25519_hex(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def relay_headers(key: Ed25519PrivateKey, body: bytes, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    signature = key.sign(f"{stamp}.{len(body)}.".encode() + body)
    return {
        "content-type": "application/json",
        "x-ed25519-signature": signature.hex(),
        "x-ed25519-timestamp": stamp,
    }


def client_jwt(
    key: Ed25519PrivateKey, audience: str, *, iss: str | None = None, exp_in: float = 3600
) -> str:
    """A did:key EdDSA JWT made with PyJWT (an implementation independent of clarion's)."""
    from clarion.core.wcauth import did_key

    now = int(time.time())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    claims = {"iss": iss or did_key(raw), "aud": audience, "iat": now, "exp": now + int(exp_in)}
    return jwt.encode(claims, key, algorithm="EdDSA")


def tenant_jwt(secret: str, tenant_id: str, *, exp_in: float = 3600) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": tenant_id, "iat": now, "exp": now + int(exp_in)}, secret, algorithm="HS256"
    )


def apns_p12(password: bytes, *, days: int = 365) -> bytes:
    """A self-signed certificate with its EC key, as PKCS#12 protected by ``password``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Apple Push Services: com.example")])
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=2), now + timedelta(days=days))
    if days < 0:
        start, end = now - timedelta(days=10), now + timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        b"apns", key, cert, None, serialization.BestAvailableEncryption(password)
    )
