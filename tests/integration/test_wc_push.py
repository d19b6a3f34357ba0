"""WalletConnect pushes through the real noop provider: flags and blob, raw form, and dedup
that outlives the process. Provider outcomes against the APNs emulator: test_wc_push_apns.py."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from clarion.app import create_app
from clarion.core.services import Services, open_services
from clarion.providers.noop import NoopProvider
from tests.wc_support import (
    cleartext_blob,
    encrypted_push,
    noop_provider,
    register_body,
)

GENERIC = "You have new notifications. Open to view"


@pytest.fixture
def noop(services: Services) -> NoopProvider:
    """The real noop provider the default tenant's ``noop`` clients are delivered through."""
    return noop_provider(services)


@pytest.fixture
async def wallet(client: httpx.AsyncClient) -> str:
    response = await client.post("/clients", json=register_body("wallet", "tok-wallet"))
    assert response.status_code == 200
    return "wallet"


async def test_encrypted_blob_is_sent_opaque_with_its_topic(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    body = encrypted_push("m-1", blob="b3BhcXVl", topic="ab" * 32)
    body["payload"]["flags"] = 1 | 16 | 1 << 20  # encrypted, notify, and an unknown high bit
    response = await client.post(f"/clients/{wallet}", json=body)
    assert response.status_code == 200 and response.json() == {"status": "OK"}
    [(notification, token)] = noop.received
    assert token == "tok-wallet"
    assert notification.topic == "ab" * 32 and notification.blob == "b3BhcXVl"
    assert notification.title is None and notification.body is None
    assert notification.extras["flags"] == 1 | 16 | 1 << 20


async def test_cleartext_blob_becomes_a_visible_title_and_body(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    blob = cleartext_blob("Payment received", "0.1 ETH from alice", url="https://x.example")
    body = {"id": "m-1", "payload": {"topic": "tp", "flags": 16, "blob": blob}}
    assert (await client.post(f"/clients/{wallet}", json=body)).status_code == 200
    [(notification, _)] = noop.received
    assert (notification.title, notification.body) == ("Payment received", "0.1 ETH from alice")
    assert notification.topic == "tp" and notification.blob == blob
    assert notification.extras["flags"] == 16


@pytest.mark.parametrize(
    "blob",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"title": "no body"}').decode(),
    ],
)
async def test_cleartext_blob_that_is_not_base64_json_is_refused_and_not_sent(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str, blob: str
) -> None:
    body = {"id": "m-1", "payload": {"topic": "tp", "flags": 0, "blob": blob}}
    response = await client.post(f"/clients/{wallet}", json=body)
    assert response.status_code == 202
    data = response.json()
    assert data["status"] == "FAILED" and data["errors"][0]["name"] == "json"
    assert data["fields"][0] == {
        "field": "payload.blob",
        "description": data["fields"][0]["description"],
        "location": "body",
    }
    assert noop.received == []
    # The id was not used up: the relay may send the message again, corrected.
    body["payload"]["blob"] = cleartext_blob()
    assert (await client.post(f"/clients/{wallet}", json=body)).status_code == 200
    assert len(noop.received) == 1


async def test_resend_of_a_sent_message_with_an_unusable_blob_is_a_duplicate(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    body = {"id": "m-1", "payload": {"topic": "tp", "flags": 0, "blob": cleartext_blob()}}
    assert (await client.post(f"/clients/{wallet}", json=body)).status_code == 200
    # The same id again, its blob now unusable: the message was sent, so this is a duplicate
    # (200, nothing sent), not a refusal of a message that never went out.
    body["payload"]["blob"] = "not base64!"
    response = await client.post(f"/clients/{wallet}", json=body)
    assert response.status_code == 200 and response.json() == {"status": "OK"}
    assert len(noop.received) == 1
    # Another id with the same blob is still refused.
    body["id"] = "m-2"
    response = await client.post(f"/clients/{wallet}", json=body)
    assert response.status_code == 202 and response.json()["errors"][0]["name"] == "json"
    assert len(noop.received) == 1


async def test_always_raw_client_gets_cleartext_flags_blob_opaque(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    await client.post("/clients", json=register_body("raw", "tok-raw", always_raw=True))
    body = {"id": "m-1", "payload": {"topic": "tp", "flags": 0, "blob": "not-base64-json"}}
    assert (await client.post("/clients/raw", json=body)).status_code == 200
    [(notification, token)] = noop.received
    assert token == "tok-raw" and notification.blob == "not-base64-json"
    assert notification.title is None


async def test_raw_form_is_passed_through_at_top_level_and_in_payload(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    top = {"topic": "tp", "tag": 4002, "message": "opaque-message"}
    assert (await client.post(f"/clients/{wallet}", json=top)).status_code == 200
    # Without an id, the same raw message again is a duplicate.
    assert (await client.post(f"/clients/{wallet}", json=top)).status_code == 200
    nested = {"id": "m-9", "payload": {"topic": "tp", "tag": 4003, "message": "other"}}
    assert (await client.post(f"/clients/{wallet}", json=nested)).status_code == 200
    extras = [dict(n.extras) for n, _ in noop.received]
    assert extras == [
        {"tag": 4002, "message": "opaque-message"},
        {"tag": 4003, "message": "other"},
    ]
    assert all(n.topic == "tp" and n.blob is None for n, _ in noop.received)


async def test_duplicate_message_id_is_not_pushed_twice(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    first = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
    again = await client.post(f"/clients/{wallet}", json=encrypted_push("m-1", blob="other"))
    assert first.status_code == again.status_code == 200
    assert again.json() == {"status": "OK"}
    assert len(noop.received) == 1
    assert (await client.post(f"/clients/{wallet}", json=encrypted_push("m-2"))).status_code == 200
    assert len(noop.received) == 2


async def test_same_message_id_for_two_clients_is_sent_to_both(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    for n in (1, 2):
        await client.post("/clients", json=register_body(f"c{n}", f"t{n}"))
        await client.post(f"/clients/c{n}", json=encrypted_push("shared-id"))
    assert sorted(token for _, token in noop.received) == ["t1", "t2"]


async def test_concurrent_duplicates_are_sent_once(
    client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    responses = await asyncio.gather(
        *(client.post(f"/clients/{wallet}", json=encrypted_push("m-1")) for _ in range(16))
    )
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
    assert len(noop.received) == 1


async def test_dedup_holds_across_a_restart_and_a_second_process(
    services: Services, client: httpx.AsyncClient, noop: NoopProvider, wallet: str
) -> None:
    assert (await client.post(f"/clients/{wallet}", json=encrypted_push("m-1"))).is_success
    # Another set of services on the same database: another process, or this one restarted.
    for _ in range(2):
        other = await open_services(services.settings)
        second = noop_provider(other)
        app = create_app(other.settings, services=other)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://other") as peer:
                again = await peer.post(f"/clients/{wallet}", json=encrypted_push("m-1"))
                assert again.status_code == 200
                assert second.received == []
        finally:
            await other.close()


async def test_push_to_unknown_client_is_accepted_so_the_relay_does_not_retry(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    response = await client.post("/clients/nobody", json=encrypted_push("m-1"))
    assert response.status_code == 202 and response.json() == {"status": "OK"}
    assert noop.received == []


async def test_push_to_unknown_tenant_is_404(client: httpx.AsyncClient, noop: NoopProvider) -> None:
    response = await client.post("/no-such-tenant/clients/x", json=encrypted_push("m-1"))
    assert response.status_code == 404
    assert response.json()["errors"][0]["name"] == "tenant"


async def test_a_burst_of_mixed_pushes_gets_each_its_own_answer(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    for n in range(4):
        await client.post("/clients", json=register_body(f"c{n}", f"t{n}"))
    # Concurrent pushes end up in shared batches: new ids, repeats, unknown clients, bad blobs.
    bodies = [(f"c{n % 4}", encrypted_push(f"m{n % 6}")) for n in range(24)]
    bodies += [("ghost", encrypted_push("m0"))] * 3
    bad = {"id": "bad", "payload": {"topic": "t", "flags": 0, "blob": "%%%"}}
    bodies += [("c0", bad)] * 2
    responses = await asyncio.gather(*(client.post(f"/clients/{c}", json=b) for c, b in bodies))
    codes = [r.status_code for r in responses]
    assert codes[:24] == [200] * 24 and codes[24:27] == [202] * 3 and codes[27:] == [202] * 2
    assert all(r.json() == {"status": "OK"} for r in responses[24:27])
    assert all(r.json()["errors"][0]["name"] == "json" for r in responses[27:])
    # Each distinct (client, id) pair was sent exactly once.
    expected = {(f"c{n % 4}", f"m{n % 6}") for n in range(24)}
    assert len(noop.received) == len(expected)
    per_token = {f"t{k}": sum(1 for c, _ in expected if c == f"c{k}") for k in range(4)}
    assert {t: sum(1 for _, token in noop.received if token == t) for t in per_token} == (per_token)
