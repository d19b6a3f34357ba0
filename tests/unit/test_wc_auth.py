"""WalletConnect signature and JWT checks, against keys and tokens made independently."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from clarion.core import wcauth
from clarion.errors import ClarionError, Unauthorized

NOW = 1_800_000_000.0


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@given(st.binary(max_size=40))
def test_base58_round_trips(data: bytes) -> None:
    assert wcauth.base58_decode(wcauth.base58_encode(data)) == data


def test_did_key_of_a_known_key_matches_the_did_key_spec_example() -> None:
    # From the did:key specification (Ed25519 test vector).
    did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    key = wcauth.did_key_public_key(did)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert wcauth.did_key(raw) == did


@pytest.mark.parametrize("did", ["did:key:abc", "did:web:x", "did:key:z0OIl", "did:key:z2J9"])
def test_malformed_did_keys_are_refused(did: str) -> None:
    with pytest.raises(Unauthorized):
        wcauth.did_key_public_key(did)


def test_relay_signature_over_timestamp_length_and_body() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"id":"1"}'
    stamp = str(int(NOW))
    signature = key.sign(f"{stamp}.{len(body)}.".encode() + body).hex()
    public = key.public_key()
    wcauth.verify_relay_signature(public, body, signature, stamp, now=NOW, max_age=300)
    for args in [
        (body + b" ", signature, stamp),
        (body, signature, str(int(NOW) + 1)),
        (body, f"{int(signature[:2], 16) ^ 1:02x}{signature[2:]}", stamp),
        (body, "zz", stamp),
        (body, signature, "yesterday"),
        (body, signature, "9" * 400),  # no number too large to compare with the clock
        (body, signature, f"+{stamp}"),
        (body, signature, f" {stamp}"),
        (body, signature, f"{stamp[:4]}_{stamp[4:]}"),
        (body, None, stamp),
        (body, signature, None),
    ]:
        with pytest.raises(Unauthorized):
            wcauth.verify_relay_signature(public, *args, now=NOW, max_age=300)
    with pytest.raises(Unauthorized, match="old"):
        wcauth.verify_relay_signature(public, body, signature, stamp, now=NOW + 301, max_age=300)


def test_relay_key_setting_must_be_hex_ed25519() -> None:
    key = Ed25519PrivateKey.generate()
    assert wcauth.relay_public_key(raw_public(key).hex()) is not None
    for bad in ("", "xyz", "00" * 31):
        with pytest.raises(ClarionError):
            wcauth.relay_public_key(bad)


def client_token(key: Ed25519PrivateKey, **claims: object) -> str:
    base: dict[str, object] = {
        "iss": wcauth.did_key(raw_public(key)),
        "aud": "https://push.example",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm="EdDSA")


def test_client_jwt_rules() -> None:
    key = Ed25519PrivateKey.generate()
    client_id = wcauth.did_key(raw_public(key)).removeprefix("did:key:")
    check = dict(client_id=client_id, audience="https://push.example", now=NOW)
    deep = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    wcauth.verify_client_jwt(client_token(key), **check)  # type: ignore[arg-type]
    wcauth.verify_client_jwt(client_token(key, aud=["x", "https://push.example/"]), **check)  # type: ignore[arg-type]
    for token in [
        client_token(key, exp=int(NOW) - 60),
        client_token(key, exp=None),
        client_token(key, iat=int(NOW) + 3600),
        client_token(key, exp=10**400),  # no float can hold it: was a 500
        client_token(key, iat=10**400),
        client_token(key, exp=1e300),
        client_token(key, exp="1900000000"),
        client_token(key, nbf=int(NOW) + 3600),
        client_token(key, aud="https://other.example"),
        client_token(key, iss=None),
        client_token(Ed25519PrivateKey.generate(), iss=f"did:key:{client_id}"),
        jwt.encode({"iss": f"did:key:{client_id}", "exp": NOW + 60}, "k" * 32, algorithm="HS256"),
        "a.b",
        f"{deep}.{deep}.AAAA",  # nested deeper than the JSON parser goes
        "\xff.e30.AAAA",
    ]:
        with pytest.raises(Unauthorized):
            wcauth.verify_client_jwt(token, **check)  # type: ignore[arg-type]


def test_tenant_jwt_rules() -> None:
    secret = b"s" * 32
    now = time.time()

    def token(**claims: object) -> str:
        base = {"sub": "tenant-a", "exp": int(now) + 60, **claims}
        return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, "HS256")

    wcauth.verify_tenant_jwt(token(), secret=secret, tenant_id="tenant-a", now=now)
    wcauth.verify_tenant_jwt(token(nbf=int(now) - 5), secret=secret, tenant_id="tenant-a", now=now)
    for bad, tenant in [
        (token(), "tenant-b"),
        (token(exp=int(now) - 120), "tenant-a"),
        (token(exp=None), "tenant-a"),
        (token(exp=10**400), "tenant-a"),
        (token(iat=-(10**400)), "tenant-a"),
        (token(nbf=int(now) + 3600), "tenant-a"),
        (token(exp=True), "tenant-a"),
        (jwt.encode({"sub": "tenant-a", "exp": now + 60}, b"x" * 32, "HS256"), "tenant-a"),
        (jwt.encode({"sub": "tenant-a", "exp": now + 60}, secret * 2, "HS512"), "tenant-a"),
    ]:
        with pytest.raises(Unauthorized):
            wcauth.verify_tenant_jwt(bad, secret=secret, tenant_id=tenant, now=now)
