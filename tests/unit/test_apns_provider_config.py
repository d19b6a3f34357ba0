from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.providers.apns import PRODUCTION_URL, SANDBOX_URL, ApnsProvider
from clarion.providers.base import ApnsCredentials
from clarion.providers.transport import HttpResponse


class UnusedTransport:
    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        raise AssertionError("not expected to send")

    async def close(self) -> None:
        return None


def _key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_credentials_without_key_or_certificate_are_refused() -> None:
    with pytest.raises(ValueError, match="private key or a certificate"):
        ApnsProvider(ApnsCredentials(bundle="b", sandbox=False), UnusedTransport())


def test_token_auth_needs_key_id_and_team_id() -> None:
    credentials = ApnsCredentials(bundle="b", sandbox=False, private_key_pem=_key_pem())
    with pytest.raises(ValueError, match="key_id and team_id"):
        ApnsProvider(credentials, UnusedTransport())


def test_environment_picks_the_host_and_an_override_wins() -> None:
    pem = _key_pem()
    sandbox = ApnsCredentials(
        bundle="b", sandbox=True, key_id="K", team_id="T", private_key_pem=pem
    )
    production = ApnsCredentials(
        bundle="b", sandbox=False, key_id="K", team_id="T", private_key_pem=pem
    )
    assert ApnsProvider(sandbox, UnusedTransport()).base_url == SANDBOX_URL
    assert ApnsProvider(production, UnusedTransport()).base_url == PRODUCTION_URL
    emulated = ApnsProvider(production, UnusedTransport(), base_url="https://127.0.0.1:9/")
    assert emulated.base_url == "https://127.0.0.1:9"


def test_provider_repr_holds_no_secret() -> None:
    pem = _key_pem()
    credentials = ApnsCredentials(
        bundle="com.example", sandbox=False, key_id="K", team_id="T", private_key_pem=pem
    )
    text = repr(ApnsProvider(credentials, UnusedTransport()))
    assert "PRIVATE" not in text
    assert "com.example" in text


def test_apns_ids_are_distinct_canonical_lowercase_uuids() -> None:
    import re

    from clarion.providers.apns import _next_apns_id

    ids = [_next_apns_id() for _ in range(1000)]
    canonical = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(canonical.fullmatch(i) for i in ids)
    assert len(set(ids)) == 1000
