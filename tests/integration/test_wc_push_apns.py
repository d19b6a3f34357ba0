"""WalletConnect pushes through the real APNs provider to the APNs emulator: the wire payload,
and what each provider outcome does (dead token, rejected credentials, retry, failure)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarion.emulators.apns import ApnsEmulator
from tests.wc_support import DEFAULT_TENANT, cleartext_blob, encrypted_push, register_body

TOPIC = "com.example.wallet"
TEAM, KEY = "TEAM123456", "KEY1234567"
TOKEN = "ab" * 32


@pytest.fixture
async def apns() -> AsyncIterator[ApnsEmulator]:
    async with ApnsEmulator() as emulator:
        emulator.register_bundle(TOPIC)
        yield emulator


@pytest.fixture
def settings_overrides(apns: ApnsEmulator) -> dict[str, Any]:
    return {
        "apns_production_url": apns.url,
        "apns_sandbox_url": apns.url,
        "provider_ca_file": apns.ca_file,
    }


async def upload_key(client: httpx.AsyncClient, pem: bytes, tenant: str = DEFAULT_TENANT) -> None:
    form = {
        "apns_topic": TOPIC,
        "apns_key_id": KEY,
        "apns_team_id": TEAM,
        "apns_pkcs8_pem": pem.decode(),
    }
    response = await client.post(f"/tenants/{tenant}/apns", data=form)
    assert response.status_code == 200, response.text


@pytest.fixture
async def wallet(client: httpx.AsyncClient, apns: ApnsEmulator) -> str:
    await upload_key(client, apns.create_team_key(TEAM, KEY))
    response = await client.post("/clients", json=register_body("wallet", TOKEN, "apns"))
    assert response.status_code == 200, response.text
    return "wallet"


def delivered(apns: ApnsEmulator) -> list[Any]:
    return [p for p in apns.received if p.status == 200]


async def test_encrypted_push_arrives_as_a_mutable_background_capable_alert(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1", blob="c2VhbA=="))
    assert response.status_code == 200, response.text
    [push] = delivered(apns)
    assert push.token == TOKEN and push.headers["apns-topic"] == TOPIC
    aps = push.payload["aps"]
    assert aps["mutable-content"] == 1 and aps["content-available"] == 1
    assert aps["alert"]["title"] == "You have new notifications. Open to view"
    assert push.payload["topic"] == "t" * 64 and push.payload["blob"] == "c2VhbA=="


async def test_cleartext_push_arrives_with_its_title_and_body(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    body = {
        "id": "m-1",
        "payload": {"topic": "tp", "flags": 16, "blob": cleartext_blob("Hi", "There")},
    }
    assert (await client.post(f"/clients/{wallet}", json=body)).status_code == 200
    [push] = delivered(apns)
    assert push.payload["aps"]["alert"] == {"title": "Hi", "body": "There"}


async def test_duplicate_id_reaches_apns_once(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    for _ in range(3):
        assert (await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))).is_success
    assert len(apns.received) == 1


async def test_sandbox_clients_use_the_sandbox_endpoint(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str, services: Any
) -> None:
    other = "cd" * 32
    await client.post("/clients", json=register_body("dev", other, "apns-sandbox"))
    assert (await client.post("/clients/dev", json=encrypted_push("m-1"))).status_code == 200
    assert [p.token for p in delivered(apns)] == [other]


async def test_dead_token_deletes_the_client(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    apns.unregister_device(TOKEN)
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    assert response.status_code == 202
    assert response.json()["errors"][0]["name"] == "client_deleted"
    later = await client.post(f"/clients/{wallet}", json=encrypted_push("m-2"))
    assert later.status_code == 202 and later.json() == {"status": "OK"}
    assert len(apns.received) == 1


async def test_pushes_in_flight_together_are_each_answered_for_their_own_client(
    client: httpx.AsyncClient, apns: ApnsEmulator
) -> None:
    await upload_key(client, apns.create_team_key(TEAM, KEY))
    tokens = {f"wallet-{i}": f"{i:02x}" * 32 for i in range(1, 7)}
    for wallet, token in tokens.items():
        response = await client.post("/clients", json=register_body(wallet, token, "apns"))
        assert response.status_code == 200, response.text
    apns.unregister_device(tokens["wallet-3"])
    wallets = list(tokens)
    responses = await asyncio.gather(
        *(client.post(f"/clients/{w}", json=encrypted_push(f"m-{w}")) for w in wallets)
    )
    answers = {w: (r.status_code, r.json()) for w, r in zip(wallets, responses, strict=True)}
    assert answers.pop("wallet-3")[1]["errors"][0]["name"] == "client_deleted"
    assert all(answer == (200, {"status": "OK"}) for answer in answers.values()), answers
    assert sorted(p.token for p in delivered(apns)) == sorted(
        token for wallet, token in tokens.items() if wallet != "wallet-3"
    )


async def test_a_client_registered_after_apples_timestamp_is_kept(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    apns.unregister_device(TOKEN, timestamp_ms=1_000_000_000_000)  # 2001: long before
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    assert response.status_code == 202
    assert response.json()["errors"][0]["name"] == "push_failed"
    assert "Unregistered" in response.json()["errors"][0]["description"]
    # Still registered: the next push goes to APNs again.
    await client.post(f"/clients/{wallet}", json=encrypted_push("m-2"))
    assert len(apns.received) == 2


async def test_rejected_credentials_suspend_the_tenant_until_new_ones_are_uploaded(
    client: httpx.AsyncClient, apns: ApnsEmulator
) -> None:
    # A key APNs does not know: it answers 403 InvalidProviderToken.
    stranger = ApnsEmulator().create_team_key(TEAM, KEY)
    await upload_key(client, stranger)
    await client.post("/clients", json=register_body("ios", TOKEN, "apns"))
    response = await client.post("/clients/ios", json=encrypted_push("m-1"))
    assert response.status_code == 202
    error = response.json()["errors"][0]
    assert error["name"] == "tenant_suspended" and "InvalidProviderToken" in error["description"]
    detail = (await client.get(f"/tenants/{DEFAULT_TENANT}")).json()
    assert detail["suspended"] is True and "InvalidProviderToken" in detail["suspended_reason"]
    blocked = await client.post("/clients/ios", json=encrypted_push("m-2"))
    assert blocked.json()["errors"][0]["name"] == "tenant_suspended"
    sent_before = len(apns.received)
    # noop clients of the suspended tenant still work.
    await client.post("/clients", json=register_body("dev", "noop-token"))
    assert (await client.post("/clients/dev", json=encrypted_push("m-3"))).status_code == 200
    # The right key lifts the suspension.
    await upload_key(client, apns.create_team_key(TEAM, KEY))
    assert (await client.get(f"/tenants/{DEFAULT_TENANT}")).json()["suspended"] is False
    assert (await client.post("/clients/ios", json=encrypted_push("m-2"))).status_code == 200
    assert len(delivered(apns)) == 1 and len(apns.received) == sent_before + 1


async def test_retry_later_answers_503_and_releases_the_message_id(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    apns.faults.by_token[TOKEN] = (503, "ServiceUnavailable")
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert response.json()["errors"][0]["name"] == "provider_unavailable"
    apns.faults.by_token.clear()
    again = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    assert again.status_code == 200, again.text
    assert len(delivered(apns)) == 1


async def test_permanent_failure_is_reported_and_the_id_stays_used(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    # A blob at the size limit makes an APNs payload over 4 KB: refused before it is sent.
    big = base64.b64encode(b"x" * 3000).decode()
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1", blob=big))
    assert response.status_code == 202
    assert response.json()["errors"][0] == {"name": "push_failed", "description": "PayloadTooLarge"}
    assert (await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))).status_code == 200
    assert apns.received == []


async def test_blob_is_never_logged(
    client: httpx.AsyncClient,
    apns: ApnsEmulator,
    wallet: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    secret_blob = "U0VDUkVULUJMT0ItZG8tbm90LWxvZw=="
    apns.unregister_device(TOKEN)
    await client.post(f"/clients/{wallet}", json=encrypted_push("m-1", blob=secret_blob))
    assert apns.received and secret_blob not in caplog.text


async def test_suspending_one_tenant_leaves_another_untouched(
    client: httpx.AsyncClient, apns: ApnsEmulator
) -> None:
    good = apns.create_team_key(TEAM, KEY)
    stranger = ApnsEmulator().create_team_key(TEAM, KEY)
    for tenant, key in (("tenant-a", stranger), ("tenant-b", good)):
        assert (await client.post("/tenants", json={"id": tenant})).status_code == 200
        await upload_key(client, key, tenant)
        # The same client id and token in both tenants.
        registered = await client.post(f"/{tenant}/clients", json=register_body("c", TOKEN, "apns"))
        assert registered.status_code == 200
    rejected = await client.post("/tenant-a/clients/c", json=encrypted_push("m-1"))
    assert rejected.json()["errors"][0]["name"] == "tenant_suspended"
    assert (await client.post("/tenant-b/clients/c", json=encrypted_push("m-1"))).status_code == 200
    assert (await client.get("/tenants/tenant-a")).json()["suspended"] is True
    assert (await client.get("/tenants/tenant-b")).json()["suspended"] is False
    assert len(delivered(apns)) == 1


async def test_a_tenant_deleted_and_created_again_sends_with_its_new_credentials(
    client: httpx.AsyncClient, apns: ApnsEmulator
) -> None:
    """The provider built for the first tenant's key must not outlive it: the re-created
    tenant's credentials start a new history, which must not look like the old one's."""
    assert (await client.post("/tenants", json={"id": "tenant-a"})).status_code == 200
    await upload_key(client, apns.create_team_key(TEAM, KEY), tenant="tenant-a")
    await client.post("/tenant-a/clients", json=register_body("ios", TOKEN, "apns"))
    assert (
        await client.post("/tenant-a/clients/ios", json=encrypted_push("m-1"))
    ).status_code == 200
    assert (await client.delete("/tenants/tenant-a")).json() == {"success": True}

    assert (await client.post("/tenants", json={"id": "tenant-a"})).status_code == 200
    # The same key id and team, but a key APNs does not know.
    await upload_key(client, ApnsEmulator().create_team_key(TEAM, KEY), tenant="tenant-a")
    await client.post("/tenant-a/clients", json=register_body("ios", TOKEN, "apns"))
    response = await client.post("/tenant-a/clients/ios", json=encrypted_push("m-2"))
    assert response.status_code == 202, response.text
    assert response.json()["errors"][0]["name"] == "tenant_suspended"
    assert len(delivered(apns)) == 1


async def test_an_unreachable_push_service_is_503_without_its_address(
    client: httpx.AsyncClient, apns: ApnsEmulator, wallet: str
) -> None:
    """The relay learns to retry, not where clarion's provider connections go."""
    assert (await client.post(f"/clients/{wallet}", json=encrypted_push("m-0"))).status_code == 200
    await apns.stop()  # the provider and its connection are up: now they fail
    response = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    assert response.status_code == 503, response.text
    [error] = response.json()["errors"]
    assert error == {
        "name": "provider_unavailable",
        "description": "The push service could not be reached.",
    }
    assert "127.0.0.1" not in response.text
