"""WalletConnect clients: registration rules, push types, atomic upserts, unregistration."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from sqlalchemy import delete, func, select

from clarion.core.services import Services
from clarion.core.walletconnect import PushType, Registration
from clarion.providers.noop import NoopProvider
from clarion.store.models import Device, WcMessage
from tests.support import apns_p8, service_account
from tests.wc_support import (
    DEFAULT_TENANT,
    encrypted_push,
    noop_provider,
    register_body,
)


@pytest.fixture
def noop(services: Services) -> NoopProvider:
    return noop_provider(services)


async def upload_apns(client: httpx.AsyncClient, tenant: str = DEFAULT_TENANT) -> None:
    form = {
        "apns_topic": "com.example.wallet",
        "apns_key_id": "ABC123DEFG",
        "apns_team_id": "DEF123GHIJ",
        "apns_pkcs8_pem": apns_p8().decode(),
    }
    response = await client.post(f"/tenants/{tenant}/apns", data=form)
    assert response.status_code == 200, response.text


async def clients_of(services: Services) -> dict[str, tuple[str, str]]:
    async with services.db.reader() as session:
        rows = await session.execute(
            select(Device.client_id, Device.token, Device.platform).where(
                Device.client_id.is_not(None)
            )
        )
        return {cid: (token, platform) for cid, token, platform in rows}


async def test_default_tenant_accepts_noop_out_of_the_box(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    response = await client.post("/clients", json=register_body("wallet-1", "tok-1"))
    assert response.status_code == 200 and response.json() == {"status": "OK"}
    pushed = await client.post("/clients/wallet-1", json=encrypted_push("m-1"))
    assert pushed.status_code == 200 and pushed.json() == {"status": "OK"}
    assert [token for _, token in noop.received] == ["tok-1"]


async def test_did_key_prefix_is_stripped(
    client: httpx.AsyncClient, services: Services, noop: NoopProvider
) -> None:
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert (await client.post("/clients", json=register_body(did, "tok-1"))).status_code == 200
    assert set(await clients_of(services)) == {did.removeprefix("did:key:")}
    assert (await client.post(f"/clients/{did}", json=encrypted_push("m-1"))).status_code == 200
    assert [token for _, token in noop.received] == ["tok-1"]
    assert (await client.delete(f"/clients/{did}")).status_code == 200
    assert await clients_of(services) == {}


@pytest.mark.parametrize("spelling", ["noop", "NOOP", "Noop"])
async def test_push_type_is_case_insensitive(client: httpx.AsyncClient, spelling: str) -> None:
    response = await client.post("/clients", json=register_body("c-1", "tok", spelling))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("push_type", ["apns", "APNS", "apns-sandbox", "fcm", "FCM", "fcm_v1"])
async def test_types_without_tenant_credentials_are_refused(
    client: httpx.AsyncClient, push_type: str
) -> None:
    response = await client.post("/clients", json=register_body("c-1", "tok", push_type))
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "FAILED"
    assert body["errors"][0]["name"] == "provider_not_available"
    assert body["fields"][0]["field"] == "type" and body["fields"][0]["location"] == "body"


async def test_unknown_type_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/clients", json=register_body("c-1", "tok", "carrier-pigeon"))
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "type"


async def test_apns_types_are_accepted_once_the_tenant_has_apns_credentials(
    client: httpx.AsyncClient, services: Services, noop: NoopProvider
) -> None:
    await upload_apns(client)
    assert (await client.post("/clients", json=register_body("a", "0a" * 32, "APNS"))).is_success
    sandbox = register_body("b", "0B" * 32, "apns-sandbox")
    assert (await client.post("/clients", json=sandbox)).is_success
    assert (await client.post("/clients", json=register_body("c", "t-c", "fcm"))).status_code == 400
    # A token APNs can never take: refused now, not deleted by the first push.
    for token in ("t-d", "0a" * 31 + "zz", " " + "0a" * 32, "abc"):
        refused = await client.post("/clients", json=register_body("d", token, "apns"))
        assert refused.status_code == 400, token
        assert refused.json()["fields"] == [
            {
                "field": "token",
                "description": "An APNs device token is hexadecimal digits, an even number of "
                "them.",
                "location": "body",
            }
        ]
    async with services.db.reader() as session:
        rows = await session.execute(
            select(Device.client_id, Device.platform, Device.environment).where(
                Device.client_id.is_not(None)
            )
        )
        assert sorted(rows) == [("a", "apns", "production"), ("b", "apns", "development")]


async def test_fcm_and_fcm_v1_are_both_accepted_with_a_service_account(
    client: httpx.AsyncClient, services: Services
) -> None:
    document = {"credentials": ("sa.json", __import__("json").dumps(service_account()))}
    assert (await client.post(f"/tenants/{DEFAULT_TENANT}/fcm_v1", files=document)).is_success
    for n, push_type in enumerate(["fcm", "fcm_v1", "FCM"]):
        response = await client.post("/clients", json=register_body(f"c{n}", f"t{n}", push_type))
        assert response.status_code == 200, response.text
    assert {platform for _, platform in (await clients_of(services)).values()} == {"fcm"}


async def test_same_id_with_a_new_token_updates_the_token(
    client: httpx.AsyncClient, services: Services, noop: NoopProvider
) -> None:
    await client.post("/clients", json=register_body("wallet", "old-token"))
    await client.post("/clients", json=register_body("wallet", "new-token"))
    assert await clients_of(services) == {"wallet": ("new-token", "noop")}
    await client.post("/clients/wallet", json=encrypted_push("m-1"))
    assert [token for _, token in noop.received] == ["new-token"]


async def test_same_token_under_another_id_moves_and_drops_old_ids_messages(
    client: httpx.AsyncClient, services: Services, noop: NoopProvider
) -> None:
    await client.post("/clients", json=register_body("old-id", "shared-token"))
    await client.post("/clients/old-id", json=encrypted_push("m-1"))
    await client.post("/clients", json=register_body("new-id", "shared-token"))
    assert await clients_of(services) == {"new-id": ("shared-token", "noop")}
    async with services.db.reader() as session:
        kept = await session.scalar(
            select(func.count()).select_from(WcMessage).where(WcMessage.client_id == "old-id")
        )
    assert kept == 0
    assert (await client.post("/clients/old-id", json=encrypted_push("m-2"))).status_code == 202
    assert (await client.post("/clients/new-id", json=encrypted_push("m-1"))).status_code == 200
    assert [token for _, token in noop.received] == ["shared-token", "shared-token"]


async def test_unregister_is_idempotent(client: httpx.AsyncClient, services: Services) -> None:
    await client.post("/clients", json=register_body("wallet", "tok"))
    first, again = await client.delete("/clients/wallet"), await client.delete("/clients/wallet")
    assert first.status_code == again.status_code == 200
    assert again.json() == {"status": "OK"}
    assert await clients_of(services) == {}


async def test_concurrent_registrations_of_one_token_leave_exactly_one_owner(
    client: httpx.AsyncClient, services: Services
) -> None:
    responses = await asyncio.gather(
        *(client.post("/clients", json=register_body(f"id-{n}", "contested")) for n in range(12))
    )
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses]
    owners = await clients_of(services)
    assert len(owners) == 1 and next(iter(owners.values())) == ("contested", "noop")


async def test_concurrent_token_updates_of_one_id_leave_one_registration(
    client: httpx.AsyncClient, services: Services
) -> None:
    responses = await asyncio.gather(
        *(client.post("/clients", json=register_body("wallet", f"tok-{n}")) for n in range(12))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    owners = await clients_of(services)
    assert list(owners) == ["wallet"] and owners["wallet"][0].startswith("tok-")


async def test_concurrent_mixed_registrations_keep_tokens_unique(
    client: httpx.AsyncClient, services: Services
) -> None:
    bodies = [register_body(f"id-{n % 4}", f"tok-{n % 3}") for n in range(24)]
    responses = await asyncio.gather(*(client.post("/clients", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    owners = await clients_of(services)
    tokens = [token for token, _ in owners.values()]
    assert len(tokens) == len(set(tokens)) and 1 <= len(owners) <= 3


@pytest.mark.parametrize(("given", "stored"), [(None, False), (True, True), (False, False)])
async def test_always_raw_null_is_taken_as_absent(
    client: httpx.AsyncClient, services: Services, given: bool | None, stored: bool
) -> None:
    """The Rust server's Option<bool>: null was refused as "always_raw is required"."""
    body = {"client_id": "raw-client", "type": "noop", "token": "tok-raw", "always_raw": given}
    response = await client.post("/clients", json=body)
    assert response.status_code == 200, response.text
    async with services.db.reader() as session:
        row = await session.scalar(
            select(Device.always_raw).where(Device.client_id == "raw-client")
        )
    assert row is stored


async def test_always_raw_of_another_type_is_refused(client: httpx.AsyncClient) -> None:
    body = {"client_id": "raw-client", "type": "noop", "token": "tok-raw", "always_raw": "yes"}
    response = await client.post("/clients", json=body)
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "always_raw"


async def test_a_field_error_is_reported_in_fields_only_whoever_finds_it(
    client: httpx.AsyncClient,
) -> None:
    """The spec: fields when a user-supplied field caused it, errors for general causes. An
    empty id (pydantic) and a blank one (clarion's own check) answered in two shapes."""
    for client_id in ("", "   ", "did:key:"):
        body = {"client_id": client_id, "type": "noop", "token": "tok"}
        response = await client.post("/clients", json=body)
        assert response.status_code == 400
        data = response.json()
        assert "errors" not in data, data
        assert [f["field"] for f in data["fields"]] == ["client_id"]
    named = await client.post("/clients", json={"client_id": "c", "type": "apns", "token": "t"})
    assert named.status_code == 400
    assert named.json()["errors"][0]["name"] == "provider_not_available"
    assert named.json()["fields"][0]["field"] == "type"


def registered_one_by_one(
    before: dict[str, str], batch: list[tuple[str, str]]
) -> tuple[dict[str, str], set[str]]:
    """The spec's rules applied one registration at a time: the clients' tokens after the
    batch, and the clients that lost their row on the way (with their message ids)."""
    held, removed = dict(before), set()
    for client_id, token in batch:
        for other, other_token in list(held.items()):
            if other_token == token and other != client_id:
                del held[other]
                removed.add(other)
        held[client_id] = token
    return held, removed


async def test_registrations_made_together_end_as_if_made_one_by_one(
    client: httpx.AsyncClient, services: Services
) -> None:
    # Registrations started in one turn of the event loop share one transaction. Whatever
    # they do to each other (a token moving between clients, a client re-registering, two
    # clients trading tokens), the outcome must be that of the same registrations made in
    # order, message ids included.
    rng = random.Random(20261202)
    wc = services.walletconnect
    for round_ in range(25):
        async with services.db.transaction() as session:
            await session.execute(delete(WcMessage))
            await session.execute(delete(Device).where(Device.client_id.is_not(None)))
        clients = [f"c{n}" for n in range(5)]
        tokens = [f"t{n}" for n in range(4)]
        before = dict(zip(rng.sample(clients, 3), rng.sample(tokens, 3), strict=True))
        for client_id, token in before.items():
            await wc.register(Registration(DEFAULT_TENANT, client_id, PushType.NOOP, token))
            pushed = await client.post(f"/clients/{client_id}", json=encrypted_push("m"))
            assert pushed.status_code == 200, pushed.text
        batch = [(rng.choice(clients), rng.choice(tokens)) for _ in range(rng.randint(2, 8))]

        await asyncio.gather(
            *(wc.register(Registration(DEFAULT_TENANT, c, PushType.NOOP, t)) for c, t in batch)
        )

        expected, removed = registered_one_by_one(before, batch)
        stored = {c: token for c, (token, _) in (await clients_of(services)).items()}
        assert stored == expected, (round_, before, batch)
        async with services.db.reader() as session:
            kept = set(await session.scalars(select(WcMessage.client_id)))
        assert kept == set(before) - removed, (round_, before, batch)


async def test_a_batch_one_upsert_cannot_order_is_applied_one_by_one(
    client: httpx.AsyncClient, services: Services
) -> None:
    # "b" takes "x" after "a" gave it up, in the same batch: a multi-row upsert writes b's row
    # (first in the batch) while a's still holds "x", which the token's unique index refuses.
    wc = services.walletconnect
    await wc.register(Registration(DEFAULT_TENANT, "a", PushType.NOOP, "x"))
    batch = [("b", "w"), ("a", "y"), ("b", "x")]
    await asyncio.gather(
        *(wc.register(Registration(DEFAULT_TENANT, c, PushType.NOOP, t)) for c, t in batch)
    )
    stored = {c: token for c, (token, _) in (await clients_of(services)).items()}
    assert stored == registered_one_by_one({"a": "x"}, batch)[0] == {"a": "y", "b": "x"}
