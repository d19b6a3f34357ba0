"""The service-account JWT assertion, Retry-After parsing and the single-flight token cache."""

import asyncio
import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from clarion.emulators.fcm import make_service_account
from clarion.providers.base import FcmCredentials, HmsCredentials
from clarion.providers.oauth import (
    AccessToken,
    AccessTokenCache,
    ServiceAccount,
    TokenUnavailable,
    b64url_decode,
    jwt_bearer_assertion,
    retry_after,
)


@pytest.fixture(scope="module")
def info() -> dict[str, str]:
    return make_service_account("proj-1", token_uri="http://127.0.0.1:9/token")


def test_assertion_is_rs256_signed_with_googles_claims(info: dict[str, str]) -> None:
    account = ServiceAccount.from_info(info)
    jwt = jwt_bearer_assertion(account, now=1_700_000_000)
    header_part, claims_part, signature_part = jwt.split(".")
    assert json.loads(b64url_decode(header_part)) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": info["private_key_id"],
    }
    assert json.loads(b64url_decode(claims_part)) == {
        "iss": info["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    account.private_key.public_key().verify(
        b64url_decode(signature_part),
        f"{header_part}.{claims_part}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_assertion_lifetime_never_exceeds_an_hour(info: dict[str, str]) -> None:
    jwt = jwt_bearer_assertion(ServiceAccount.from_info(info), now=100, lifetime=7200)
    claims = json.loads(b64url_decode(jwt.split(".")[1]))
    assert claims["exp"] - claims["iat"] == 3600


def test_service_account_uses_its_token_uri(info: dict[str, str]) -> None:
    assert ServiceAccount.from_info(info).token_uri == "http://127.0.0.1:9/token"


def test_bad_service_account_names_the_field_not_the_secret(info: dict[str, str]) -> None:
    broken = {**info, "private_key": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END"}
    with pytest.raises(ValueError, match="private_key is not a PEM") as caught:
        ServiceAccount.from_info(broken)
    assert "c2VjcmV0" not in str(caught.value)
    with pytest.raises(ValueError, match="client_email"):
        ServiceAccount.from_info({**info, "client_email": ""})


def test_secrets_stay_out_of_reprs(info: dict[str, str]) -> None:
    assert "PRIVATE KEY" not in repr(ServiceAccount.from_info(info))
    assert "PRIVATE KEY" not in repr(FcmCredentials("p", info))
    assert "hunter2" not in repr(HmsCredentials("p", "c", "hunter2"))
    assert "abc" not in repr(AccessToken("abc", 10))


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after({"retry-after": "120"}) == 120.0
    when = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=now) == 60.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_callers_share_one_refresh() -> None:
    calls = 0

    async def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return AccessToken(f"token-{calls}", 3600)

    cache = AccessTokenCache(fetch)
    values = await asyncio.gather(*(cache.get() for _ in range(50)))
    assert set(values) == {"token-1"}
    assert calls == 1
    assert cache.refreshes == 1


async def test_token_is_renewed_shortly_before_expiry() -> None:
    clock = FakeClock()
    issued = iter(["first", "second"])

    async def fetch() -> AccessToken:
        return AccessToken(next(issued), 3600)

    cache = AccessTokenCache(fetch, margin=300, clock=clock)
    assert await cache.get() == "first"
    clock.now += 3299
    assert await cache.get() == "first"
    clock.now += 2
    assert await cache.get() == "second"


async def test_invalidate_forgets_only_the_refused_token() -> None:
    issued = iter(["first", "second"])

    async def fetch() -> AccessToken:
        return AccessToken(next(issued), 3600)

    cache = AccessTokenCache(fetch)
    assert await cache.get() == "first"
    cache.invalidate("stale-other")
    assert await cache.get() == "first"
    cache.invalidate("first")
    assert await cache.get() == "second"


async def test_failed_refresh_reaches_every_waiter_and_the_next_call_tries_again() -> None:
    attempts = 0

    async def fetch() -> AccessToken:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise TokenUnavailable("down", retry_after=5)
        return AccessToken("ok", 3600)

    cache = AccessTokenCache(fetch)
    results = await asyncio.gather(*(cache.get() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, TokenUnavailable) for r in results)
    assert await cache.get() == "ok"
    assert attempts == 2
