import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from clarion.providers.apns_jwt import (
    InvalidSigningKey,
    ProviderTokenSigner,
    shared_signer,
    sign_provider_token,
)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_token_has_apple_header_and_claims_and_a_raw_es256_signature(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    token = sign_provider_token(key, key_id="ABC123DEFG", team_id="TEAM000001", issued_at=1234)
    header, claims, signature = token.split(".")
    assert json.loads(_decode(header)) == {"alg": "ES256", "kid": "ABC123DEFG"}
    assert json.loads(_decode(claims)) == {"iss": "TEAM000001", "iat": 1234}
    raw = _decode(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))


def test_token_is_reused_until_renewal_age_then_renewed(key: ec.EllipticCurvePrivateKey) -> None:
    clock = FakeClock()
    signer = ProviderTokenSigner(
        key_id="K", team_id="T", private_key_pem=_pem(key), renew_after=3000, clock=clock
    )
    first = signer.token()
    clock.now += 2999
    assert signer.token() == first
    clock.now += 1
    second = signer.token()
    assert second != first
    assert signer.issued_at == int(clock.now)


def test_expired_token_is_renewed_once_for_all_requests_that_saw_it(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    signer = ProviderTokenSigner(key_id="K", team_id="T", private_key_pem=_pem(key))
    stale = signer.token()
    fresh = signer.renew_expired(stale)
    assert fresh is not None and fresh != stale
    assert signer.renew_expired(stale) == fresh
    assert signer.token() == fresh


def test_a_fresh_token_called_expired_is_not_renewed_again_within_20_minutes(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    clock = FakeClock()
    signer = ProviderTokenSigner(key_id="K", team_id="T", private_key_pem=_pem(key), clock=clock)
    fresh = signer.renew_expired(signer.token())
    assert fresh is not None
    clock.now += 19 * 60
    assert signer.renew_expired(fresh) is None
    assert signer.token() == fresh
    clock.now += 60
    assert signer.renew_expired(fresh) not in (None, fresh)


@pytest.mark.parametrize("renew_after", [19 * 60, 60 * 60, 61 * 60])
def test_renewal_outside_apples_window_is_refused(
    key: ec.EllipticCurvePrivateKey, renew_after: float
) -> None:
    with pytest.raises(ValueError, match="between 20 and 60"):
        ProviderTokenSigner(
            key_id="K", team_id="T", private_key_pem=_pem(key), renew_after=renew_after
        )


def test_non_p256_key_is_refused_without_echoing_it() -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(InvalidSigningKey) as caught:
        ProviderTokenSigner(key_id="K", team_id="T", private_key_pem=pem)
    assert "PRIVATE KEY" not in str(caught.value)


def test_garbage_key_is_refused() -> None:
    with pytest.raises(InvalidSigningKey):
        ProviderTokenSigner(key_id="K", team_id="T", private_key_pem=b"not a key")


def test_one_signer_per_team_and_key_in_the_process(key: ec.EllipticCurvePrivateKey) -> None:
    pem = _pem(key)
    a = shared_signer(key_id="K1", team_id="T1", private_key_pem=pem)
    assert shared_signer(key_id="K1", team_id="T1", private_key_pem=pem) is a
    assert shared_signer(key_id="K2", team_id="T1", private_key_pem=pem) is not a


def test_signer_repr_holds_no_key(key: ec.EllipticCurvePrivateKey) -> None:
    signer = ProviderTokenSigner(key_id="K", team_id="T", private_key_pem=_pem(key))
    assert repr(signer) == "ProviderTokenSigner(team_id='T', key_id='K')"
