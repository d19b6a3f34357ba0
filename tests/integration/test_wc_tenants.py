"""WalletConnect tenants: lifecycle, credentials, isolation, rate limit, error format."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion.core.services import Services, open_services
from clarion.errors import ClarionError
from clarion.providers.noop import NoopProvider
from tests.conftest import make_settings
from tests.support import apns_p8, key_fragments, service_account
from tests.wc_support import (
    DEFAULT_TENANT,
    apns_p12,
    encrypted_push,
    noop_provider,
    register_body,
)


@pytest.fixture
def noop(services: Services) -> NoopProvider:
    return noop_provider(services)


def apns_token_form(topic: str = "com.example.wallet", pem: bytes | None = None) -> dict[str, str]:
    return {
        "apns_topic": topic,
        "apns_key_id": "ABC123DEFG",
        "apns_team_id": "DEF123GHIJ",
        "apns_pkcs8_pem": (pem or apns_p8()).decode(),
    }


async def create(client: httpx.AsyncClient, tenant: str) -> None:
    response = await client.post("/tenants", json={"id": tenant})
    assert response.status_code == 200, response.text


class TestLifecycle:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"public_url": "https://push.example.com/"}

    async def test_create_get_delete(self, client: httpx.AsyncClient) -> None:
        created = await client.post("/tenants", json={"id": "tenant-a"})
        assert created.json() == {"url": "https://push.example.com/tenant-a"}
        again = await client.post("/tenants", json={"id": "tenant-a"})
        assert again.status_code == 200  # idempotent
        detail = (await client.get("/tenants/tenant-a")).json()
        assert detail == {
            "url": "https://push.example.com/tenant-a",
            "enabled_providers": ["noop"],
            "suspended": False,
        }
        assert (await client.delete("/tenants/tenant-a")).json() == {"success": True}
        gone = await client.get("/tenants/tenant-a")
        assert gone.status_code == 404 and gone.json()["errors"][0]["name"] == "tenant"


async def test_default_tenant_exists_out_of_the_box(client: httpx.AsyncClient) -> None:
    detail = await client.get(f"/tenants/{DEFAULT_TENANT}")
    assert detail.status_code == 200 and detail.json()["enabled_providers"] == ["noop"]


async def test_malformed_tenant_id_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/tenants", json={"id": "a b"})
    assert response.status_code == 400
    assert response.json()["fields"][0] == {
        "field": "id",
        "description": response.json()["fields"][0]["description"],
        "location": "body",
    }
    assert response.json()["errors"][0]["name"] == "tenant"  # the spec's name
    in_path = await client.get("/tenants/x")
    assert in_path.status_code == 400 and in_path.json()["fields"][0]["location"] == "path"


@pytest.mark.parametrize("reserved", ["tenants", "clients", "health", "rate_limit_test", "Docs"])
async def test_a_tenant_named_after_a_path_of_the_api_is_refused(
    client: httpx.AsyncClient, reserved: str
) -> None:
    """/tenants/clients/... would be read as a tenant route, not as the tenant's clients."""
    response = await client.post("/tenants", json={"id": reserved})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["name"] == "tenant"
    assert "reserved" in response.json()["fields"][0]["description"]


@pytest.mark.parametrize(
    ("client_id", "token"),
    [("a/b", "tok"), ("did:key:a/b", "tok"), ("   ", "tok"), ("did:key:", "tok"), ("c1", "  ")],
)
async def test_a_client_that_could_never_be_reached_is_refused(
    client: httpx.AsyncClient, client_id: str, token: str
) -> None:
    response = await client.post(
        "/clients", json={"client_id": client_id, "type": "noop", "token": token}
    )
    assert response.status_code == 400, response.text
    [field] = response.json()["fields"]
    assert field["field"] == ("token" if token.isspace() else "client_id")


async def test_apns_token_credentials_are_validated_stored_and_never_returned(
    client: httpx.AsyncClient,
) -> None:
    await create(client, "tenant-a")
    pem = apns_p8()
    response = await client.post("/tenants/tenant-a/apns", data=apns_token_form(pem=pem))
    assert response.status_code == 200, response.text
    detail = await client.get("/tenants/tenant-a")
    assert detail.json()["enabled_providers"] == ["apns", "noop"]
    assert detail.json()["apns_topic"] == "com.example.wallet"
    assert detail.json()["apns_type"] == "token"
    assert not any(fragment in detail.text for fragment in key_fragments(pem))


async def test_apns_key_that_is_not_p256_is_refused(client: httpx.AsyncClient) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    await create(client, "tenant-a")
    form = apns_token_form(pem=apns_p8(ec.SECP384R1()))
    response = await client.post("/tenants/tenant-a/apns", data=form)
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "apns_pkcs8_pem"


async def test_apns_certificate_is_opened_with_its_password(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    p12 = base64.b64encode(apns_p12(b"s3cret")).decode()
    good = {
        "apns_topic": "com.example",
        "apns_certificate": p12,
        "apns_certificate_password": "s3cret",
    }
    assert (await client.post("/tenants/tenant-a/apns", data=good)).status_code == 200
    assert (await client.get("/tenants/tenant-a")).json()["apns_type"] == "certificate"
    wrong = {**good, "apns_certificate_password": "wrong"}
    refused = await client.post("/tenants/tenant-a/apns", data=wrong)
    assert refused.status_code == 400
    assert refused.json()["fields"][0]["field"] == "apns_certificate"
    # A key beside the certificate: the certificate was taken and the key dropped silently.
    both = await client.post("/tenants/tenant-a/apns", data={**apns_token_form(), **good})
    assert both.status_code == 400
    assert both.json()["fields"][0]["field"] == "apns_pkcs8_pem"
    assert "not both" in both.json()["fields"][0]["description"]


async def test_expired_apns_certificate_is_refused(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    p12 = base64.b64encode(apns_p12(b"pw", days=-1)).decode()
    form = {"apns_topic": "com.example", "apns_certificate": p12, "apns_certificate_password": "pw"}
    response = await client.post("/tenants/tenant-a/apns", data=form)
    assert response.status_code == 400 and "expired" in response.text


async def test_fcm_v1_service_account_is_validated(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    good = {"credentials": ("sa.json", json.dumps(service_account("wallet-project")))}
    assert (await client.post("/tenants/tenant-a/fcm_v1", files=good)).status_code == 200
    assert (await client.get("/tenants/tenant-a")).json()["enabled_providers"] == [
        "fcm_v1",
        "noop",
    ]
    bad = await client.post("/tenants/tenant-a/fcm_v1", data={"credentials": "{not json"})
    assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "credentials"
    missing = await client.post("/tenants/tenant-a/fcm_v1", data={"other": "x"})
    assert missing.status_code == 400 and missing.json()["fields"][0]["field"] == "credentials"


async def test_legacy_fcm_key_is_refused_pointing_to_fcm_v1(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    response = await client.post("/tenants/tenant-a/fcm", data={"api_key": "AAAA"})
    assert response.status_code == 400 and "fcm_v1" in response.text


async def test_removing_credentials_refuses_their_types_again(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    await client.post("/tenants/tenant-a/apns", data=apns_token_form())
    ok = await client.post("/tenant-a/clients", json=register_body("c", "ab" * 32, "apns"))
    assert ok.status_code == 200
    assert (await client.delete("/tenants/tenant-a/apns")).status_code == 200
    refused = await client.post("/tenant-a/clients", json=register_body("d", "cd" * 32, "apns"))
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["name"] == "provider_not_available"


async def test_deleting_a_tenant_deletes_its_clients(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    await create(client, "tenant-a")
    await client.post("/tenant-a/clients", json=register_body("c", "t"))
    await client.delete("/tenants/tenant-a")
    await create(client, "tenant-a")
    response = await client.post("/tenant-a/clients/c", json=encrypted_push("m"))
    assert response.status_code == 202 and noop.received == []


async def test_tenants_never_see_each_others_clients_messages_or_credentials(
    client: httpx.AsyncClient, noop: NoopProvider
) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        await create(client, tenant)
        # The same client id and token in both tenants: two separate registrations.
        assert (await client.post(f"/{tenant}/clients", json=register_body("c", "t"))).is_success
    await client.post("/tenants/tenant-a/apns", data=apns_token_form())
    await client.post("/tenant-a/clients/c", json=encrypted_push("m-1"))
    # B's client still gets its own m-1: ids are per tenant.
    await client.post("/tenant-b/clients/c", json=encrypted_push("m-1"))
    assert [token for _, token in noop.received] == ["t", "t"]
    # A unregistering its client leaves B's alone.
    await client.delete("/tenant-a/clients/c")
    assert (await client.post("/tenant-b/clients/c", json=encrypted_push("m-2"))).status_code == 200
    assert (await client.post("/tenant-a/clients/c", json=encrypted_push("m-2"))).status_code == 202
    # A's credentials are not B's: B cannot register apns clients, and sees none.
    assert (
        await client.post("/tenant-b/clients", json=register_body("i", "j", "apns"))
    ).status_code == 400
    assert "apns_topic" not in (await client.get("/tenants/tenant-b")).json()
    # (A suspension of A leaving B untouched: test_wc_push_apns.py.)
    # Moving a token within A does not touch B's registration of the same token.
    await client.post("/tenant-a/clients", json=register_body("other", "t"))
    assert (await client.post("/tenant-b/clients/c", json=encrypted_push("m-4"))).status_code == 200


class TestRateLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"wc_rate_limit_per_minute": 5, "wc_trusted_proxies": ["127.0.0.0/8"]}

    async def test_burst_gets_some_200s_then_429s(self, client: httpx.AsyncClient) -> None:
        codes = [(await client.get("/rate_limit_test")).status_code for _ in range(12)]
        assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
        limited = await client.get("/rate_limit_test")
        assert limited.json()["status"] == "FAILED" and int(limited.headers["retry-after"]) >= 1

    async def test_registration_and_tenant_routes_are_limited(
        self, client: httpx.AsyncClient
    ) -> None:
        codes = [
            (await client.post("/clients", json=register_body(f"c{n}", f"t{n}"))).status_code
            for n in range(4)
        ]
        codes += [(await client.get(f"/tenants/{DEFAULT_TENANT}")).status_code for _ in range(3)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]

    async def test_pushes_are_not_limited(
        self, client: httpx.AsyncClient, noop: NoopProvider
    ) -> None:
        await client.post("/clients", json=register_body("w", "t"))
        codes = {
            (await client.post("/clients/w", json=encrypted_push(f"m{n}"))).status_code
            for n in range(20)
        }
        assert codes == {200}

    async def test_addresses_are_counted_apart_behind_a_trusted_proxy(
        self, client: httpx.AsyncClient
    ) -> None:
        # The ASGI test client connects from 127.0.0.1, a trusted proxy here.
        for n in range(5):
            ip = {"x-forwarded-for": "203.0.113.7"}
            assert (await client.get("/rate_limit_test", headers=ip)).status_code == 200, n
        blocked = await client.get("/rate_limit_test", headers={"x-forwarded-for": "203.0.113.7"})
        assert blocked.status_code == 429
        other = await client.get("/rate_limit_test", headers={"x-forwarded-for": "203.0.113.8"})
        assert other.status_code == 200

    async def test_a_second_forwarded_for_line_is_read_too(self, client: httpx.AsyncClient) -> None:
        # A proxy that appends its own line (HAProxy) leaves the client's own line first: the
        # client's made-up address there must not become the address it is counted as.
        for _ in range(5):
            await client.get("/rate_limit_test", headers={"x-forwarded-for": "203.0.113.9"})
        for n in range(3):
            lines = [("x-forwarded-for", f"198.51.100.{n}"), ("x-forwarded-for", "203.0.113.9")]
            response = await client.get("/rate_limit_test", headers=httpx.Headers(lines))
            assert response.status_code == 429, n


class TestUntrustedForwardedFor:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"wc_rate_limit_per_minute": 2}

    async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
        self, client: httpx.AsyncClient
    ) -> None:
        codes = [
            (
                await client.get("/rate_limit_test", headers={"x-forwarded-for": f"198.51.100.{n}"})
            ).status_code
            for n in range(3)
        ]
        assert codes == [200, 200, 429]


async def test_unknown_paths_and_methods_answer_in_each_dialects_format(
    client: httpx.AsyncClient,
) -> None:
    wrong_method = await client.get("/clients")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == "FAILED"
    assert wrong_method.headers["allow"] == "POST"
    # Every method the path takes, though FastAPI has a route per method.
    client_path = await client.put("/clients/wallet-1")
    assert client_path.status_code == 405 and client_path.headers["allow"] == "DELETE, POST"
    device = await client.get("/push/device/create")
    assert device.status_code == 405 and device.json()["status"] == "ERROR"
    assert device.headers["allow"] == "POST"
    for path in ("/health", "/push/service/status"):  # load balancers' checks send HEAD
        head = await client.head(path)
        assert head.status_code == 200, path
    unknown = await client.get("/tenants/tenant-a/nothing")
    assert unknown.status_code == 404 and unknown.json()["status"] == "FAILED"
    powerauth = await client.get("/push/nothing-here")
    assert powerauth.status_code == 404 and powerauth.json()["status"] == "ERROR"
    # A trailing slash is an unknown path too, not a 307 with an empty body.
    for path, status in (("/push/service/status/", "ERROR"), ("/admin/app/list/", "ERROR")):
        slashed = await client.get(path)
        assert slashed.status_code == 404 and slashed.json()["status"] == status, path
    slashed = await client.post("/clients/", json={"client_id": "c", "type": "noop", "token": "t"})
    assert slashed.status_code == 404 and slashed.json()["status"] == "FAILED"


async def test_health_names_the_server_and_version(client: httpx.AsyncClient) -> None:
    from clarion import __version__

    response = await client.get("/health")
    assert response.status_code == 200 and response.text == f"OK, clarion v{__version__}"


async def test_default_tenant_credentials_come_from_the_settings(
    database_url: str, tmp_path: Path
) -> None:
    key, account = tmp_path / "AuthKey.p8", tmp_path / "sa.json"
    key.write_bytes(apns_p8())
    account.write_text(json.dumps(service_account()))
    settings = make_settings(
        database_url,
        wc_apns_topic="com.example.wallet",
        wc_apns_key_file=key,
        wc_apns_key_id="ABC123DEFG",
        wc_apns_team_id="DEF123GHIJ",
        wc_fcm_credentials_file=account,
    )
    svc = await open_services(settings)
    try:
        info = await svc.tenants.info(DEFAULT_TENANT)
        assert info.platforms == {"apns", "fcm"} and info.apns_topic == "com.example.wallet"
    finally:
        await svc.close()


async def test_bad_default_tenant_credentials_stop_the_start(
    database_url: str, tmp_path: Path
) -> None:
    key = tmp_path / "AuthKey.p8"
    key.write_text("not a key")
    settings = make_settings(
        database_url,
        wc_apns_topic="com.example.wallet",
        wc_apns_key_file=key,
        wc_apns_key_id="ABC123DEFG",
        wc_apns_team_id="DEF123GHIJ",
    )
    with pytest.raises(ClarionError, match="default tenant credentials refused"):
        await open_services(settings)
    with pytest.raises(ClarionError, match="CLARION_WC_APNS_TOPIC"):
        await open_services(make_settings(database_url, wc_apns_key_file=key))
    with pytest.raises(ClarionError, match="cannot read"):
        await open_services(make_settings(database_url, wc_fcm_credentials_file=tmp_path / "no"))
    # A topic (or key id) with neither file: it started with no APNs for the default tenant.
    for half in ({"wc_apns_topic": "com.example.wallet"}, {"wc_apns_key_id": "ABC123DEFG"}):
        with pytest.raises(ClarionError, match="without CLARION_WC_APNS_KEY_FILE or "):
            await open_services(make_settings(database_url, **half))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("apns_topic", "com.example.app\r\nX-Evil: 1"),  # made every later push a 503
        ("apns_topic", "com.example\x7f"),
        ("apns_topic", "com example"),
        ("apns_key_id", "EMU\nKEY"),
        ("apns_team_id", "TEAM/123"),
    ],
)
async def test_apns_identifiers_that_could_not_go_into_a_request_are_refused(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    await create(client, "tenant-a")
    response = await client.post("/tenants/tenant-a/apns", data={**apns_token_form(), field: value})
    assert response.status_code == 400, response.text
    assert response.json()["fields"][0]["field"] == field
    assert "apns" not in (await client.get("/tenants/tenant-a")).json()["enabled_providers"]


async def test_apns_certificate_topic_is_checked_too(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    p12 = base64.b64encode(apns_p12(b"pw")).decode()
    form = {"apns_topic": "a\tb", "apns_certificate": p12, "apns_certificate_password": "pw"}
    response = await client.post("/tenants/tenant-a/apns", data=form)
    assert response.status_code == 400 and response.json()["fields"][0]["field"] == "apns_topic"


async def test_fcm_project_id_that_would_change_the_send_url_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await create(client, "tenant-a")
    account = service_account("../../evil")
    response = await client.post(
        "/tenants/tenant-a/fcm_v1", files={"credentials": ("sa.json", json.dumps(account))}
    )
    assert response.status_code == 400, response.text
    [field] = response.json()["fields"]
    assert field["field"] == "credentials" and "project_id" in field["description"]


async def test_a_tenant_cannot_choose_where_clarion_posts_its_oauth_assertion(
    client: httpx.AsyncClient,
) -> None:
    await create(client, "tenant-a")
    for token_uri in ("http://10.0.0.1/internal", "https://evil.example/token"):
        account = service_account("wallet-project", token_uri=token_uri)
        response = await client.post(
            "/tenants/tenant-a/fcm_v1", files={"credentials": ("sa.json", json.dumps(account))}
        )
        assert response.status_code == 400, response.text
        [field] = response.json()["fields"]
        assert field["field"] == "credentials" and "token_uri" in field["description"]
    assert "fcm_v1" not in (await client.get("/tenants/tenant-a")).json()["enabled_providers"]


class TestTokenUriOverridden:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"fcm_token_url": "http://127.0.0.1:9/token"}  # replaces every token_uri

    async def test_any_token_uri_is_accepted_when_never_used(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, "tenant-a")
        account = service_account("wallet-project", token_uri="http://10.0.0.1/internal")
        response = await client.post(
            "/tenants/tenant-a/fcm_v1", files={"credentials": ("sa.json", json.dumps(account))}
        )
        assert response.status_code == 200, response.text


async def test_a_truncated_multipart_form_is_named_as_such(client: httpx.AsyncClient) -> None:
    await create(client, "tenant-a")
    form = httpx.Request("POST", "http://x/", files=apns_token_form())
    body = form.read()
    content_type = form.headers["content-type"]
    for cut in (len(body) - 8, len(body) // 2, 60):
        response = await client.post(
            "/tenants/tenant-a/apns", content=body[:cut], headers={"content-type": content_type}
        )
        assert response.status_code == 400, (cut, response.text)
        failed = response.json()
        assert failed["status"] == "FAILED"
        assert failed["fields"][0]["field"] == "body", (cut, failed)
        assert "truncated" in failed["fields"][0]["description"], (cut, failed)
    whole = await client.post(
        "/tenants/tenant-a/apns", content=body, headers={"content-type": content_type}
    )
    assert whole.status_code == 200, whole.text
