"""Validation of uploaded credentials (pure functions)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.core.credentials import apns_private_key, decode_base64, fcm_service_account
from clarion.errors import InvalidRequest
from tests.support import apns_p8, rsa_pem


def test_p256_key_is_accepted_and_normalised_to_pkcs8() -> None:
    key = apns_p8()
    assert apns_private_key(key).startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("key", [rsa_pem(1024), apns_p8(ec.SECP384R1()), b"", b"\x00\x01"])
def test_other_keys_are_refused(key: bytes) -> None:
    with pytest.raises(InvalidRequest):
        apns_private_key(key)


def test_error_message_never_quotes_the_key() -> None:
    key = rsa_pem(1024)
    with pytest.raises(InvalidRequest) as caught:
        apns_private_key(key)
    assert key.decode().splitlines()[1] not in caught.value.message


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(b"hello world").decode(),
        base64.urlsafe_b64encode(b"hello world").decode().rstrip("="),
        "aGVsbG8g\nd29ybGQ=",
    ],
)
def test_base64_variants_decode(encoded: str) -> None:
    assert decode_base64(encoded, "Private key") == b"hello world"


@pytest.mark.parametrize("encoded", ["***", "a", "aGVsbG8=x=="])
def test_bad_base64_is_refused(encoded: str) -> None:
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64(encoded, "Private key")


def test_service_account_with_non_string_field_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="strings"):
        fcm_service_account(
            b'{"type": "service_account", "project_id": 1, "client_email": "a", '
            b'"private_key": "k", "token_uri": "https://x"}'
        )
