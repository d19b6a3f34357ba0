"""WalletConnect authentication with real keys: relay signatures, client JWTs, tenant JWTs."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clarion.core.services import Services, open_services
from clarion.core.wcauth import did_key
from clarion.errors import ClarionError
from tests.conftest import app_for, make_settings
from tests.wc_support import (
    client_jwt,
    ed25519_hex,
    encrypted_push,
    register_body,
    relay_headers,
    tenant_jwt,
)

RELAY = Ed25519PrivateKey.generate()
PUBLIC_URL = "https://push.example.com"
TENANT_SECRET = "tenant-jwt-secret-for-tests-0123456789"


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["status"] == "FAILED" and body["errors"][0]["name"] == "authentication"


class TestRelaySignatures:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"wc_validate_signatures": True, "wc_relay_public_key": ed25519_hex(RELAY)}

    @pytest.fixture
    async def body(self, client: httpx.AsyncClient) -> bytes:
        assert (await client.post("/clients", json=register_body("w", "t"))).status_code == 200
        return json.dumps(encrypted_push("m-1")).encode()

    async def test_good_signature_is_accepted(self, client: httpx.AsyncClient, body: bytes) -> None:
        response = await client.post("/clients/w", content=body, headers=relay_headers(RELAY, body))
        assert response.status_code == 200, response.text

    async def test_signature_of_another_key_is_refused(
        self, client: httpx.AsyncClient, body: bytes
    ) -> None:
        forged = relay_headers(Ed25519PrivateKey.generate(), body)
        assert_unauthorized(await client.post("/clients/w", content=body, headers=forged))

    async def test_signature_over_another_body_is_refused(
        self, client: httpx.AsyncClient, body: bytes
    ) -> None:
        headers = relay_headers(RELAY, body)
        tampered = body.replace(b"m-1", b"m-2")
        assert_unauthorized(await client.post("/clients/w", content=tampered, headers=headers))

    async def test_missing_signature_is_refused(
        self, client: httpx.AsyncClient, body: bytes
    ) -> None:
        response = await client.post(
            "/clients/w", content=body, headers={"content-type": "application/json"}
        )
        assert_unauthorized(response)

    async def test_stale_signature_is_refused(self, client: httpx.AsyncClient, body: bytes) -> None:
        old = relay_headers(RELAY, body, at=time.time() - 3600)
        assert_unauthorized(await client.post("/clients/w", content=body, headers=old))

    @pytest.mark.parametrize("content", [b"{not json", b"[" * 5000, b'{"id": 5}'])
    @pytest.mark.parametrize("path", ["/clients/w", "/tenant-a/clients/w"])
    async def test_an_unsigned_push_is_refused_whatever_its_body(
        self, services: Services, path: str, content: bytes
    ) -> None:
        """Checked before the body is read as JSON, on the hot and the full routes alike."""
        for hot in (True, False):
            settings = services.settings.model_copy(update={"hot_routes": hot})
            transport = httpx.ASGITransport(app=app_for(services, settings))
            async with httpx.AsyncClient(transport=transport, base_url="http://c.test") as client:
                response = await client.post(
                    path, content=content, headers={"content-type": "application/json"}
                )
                assert_unauthorized(response)
                # Signed, the same body is judged as a body (400), not as a caller.
                signed = await client.post(
                    path, content=content, headers=relay_headers(RELAY, content)
                )
                assert signed.status_code == 400, (hot, signed.text)

    async def test_registration_needs_no_relay_signature(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/clients", json=register_body("x", "y"))).status_code == 200


async def test_signatures_on_without_a_key_stop_the_start(database_url: str) -> None:
    with pytest.raises(ClarionError, match="RELAY_PUBLIC_KEY"):
        await open_services(make_settings(database_url, wc_validate_signatures=True))


class TestClientJwt:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"public_url": PUBLIC_URL}

    @staticmethod
    def identity() -> tuple[Ed25519PrivateKey, str]:
        key = Ed25519PrivateKey.generate()
        return key, did_key(bytes.fromhex(ed25519_hex(key)))

    async def test_good_jwt_registers_and_unregisters(self, client: httpx.AsyncClient) -> None:
        key, did = self.identity()
        auth = {"authorization": f"Bearer {client_jwt(key, PUBLIC_URL)}"}
        registered = await client.post("/clients", json=register_body(did, "t"), headers=auth)
        assert registered.status_code == 200, registered.text
        assert (await client.delete(f"/clients/{did}", headers=auth)).status_code == 200

    async def test_jwt_of_another_key_is_refused(self, client: httpx.AsyncClient) -> None:
        _key, did = self.identity()
        other, _ = self.identity()
        forged = client_jwt(other, PUBLIC_URL, iss=did)  # claims the id, signed by another key
        response = await client.post(
            "/clients", json=register_body(did, "t"), headers={"authorization": f"Bearer {forged}"}
        )
        assert_unauthorized(response)

    async def test_jwt_of_another_client_is_refused(self, client: httpx.AsyncClient) -> None:
        key, _did = self.identity()
        _, victim = self.identity()
        token = client_jwt(key, PUBLIC_URL)
        response = await client.delete(
            f"/clients/{victim}", headers={"authorization": f"Bearer {token}"}
        )
        assert_unauthorized(response)

    async def test_stale_jwt_is_refused(self, client: httpx.AsyncClient) -> None:
        key, did = self.identity()
        token = client_jwt(key, PUBLIC_URL, exp_in=-3600)
        response = await client.post(
            "/clients", json=register_body(did, "t"), headers={"authorization": f"Bearer {token}"}
        )
        assert_unauthorized(response)

    async def test_jwt_for_another_server_is_refused(self, client: httpx.AsyncClient) -> None:
        key, did = self.identity()
        token = client_jwt(key, "https://elsewhere.example")
        response = await client.post(
            "/clients", json=register_body(did, "t"), headers={"authorization": f"Bearer {token}"}
        )
        assert_unauthorized(response)

    async def test_garbage_bearer_is_refused(self, client: httpx.AsyncClient) -> None:
        _, did = self.identity()
        for value in ("Bearer abc", "Bearer a.b.c", "Basic Zm9vOmJhcg=="):
            response = await client.post(
                "/clients", json=register_body(did, "t"), headers={"authorization": value}
            )
            assert_unauthorized(response)

    async def test_missing_jwt_is_allowed_unless_required(self, client: httpx.AsyncClient) -> None:
        _, did = self.identity()
        assert (await client.post("/clients", json=register_body(did, "t"))).status_code == 200


class TestRequiredClientJwt:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"public_url": PUBLIC_URL, "wc_require_client_jwt": True}

    async def test_missing_jwt_is_refused(self, client: httpx.AsyncClient) -> None:
        did = did_key(bytes(32))
        assert_unauthorized(await client.post("/clients", json=register_body(did, "t")))
        assert_unauthorized(await client.delete(f"/clients/{did}"))

    async def test_good_jwt_is_accepted(self, client: httpx.AsyncClient) -> None:
        key = Ed25519PrivateKey.generate()
        did = did_key(bytes.fromhex(ed25519_hex(key)))
        auth = {"authorization": f"Bearer {client_jwt(key, PUBLIC_URL + '/')}"}
        response = await client.post("/clients", json=register_body(did, "t"), headers=auth)
        assert response.status_code == 200, response.text


class TestTenantJwt:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"wc_tenant_jwt_secret": TENANT_SECRET}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async def test_good_jwt_manages_its_tenant(self, client: httpx.AsyncClient) -> None:
        auth = self.bearer(tenant_jwt(TENANT_SECRET, "tenant-a"))
        assert (await client.post("/tenants", json={"id": "tenant-a"}, headers=auth)).is_success
        assert (await client.get("/tenants/tenant-a", headers=auth)).status_code == 200
        assert (await client.delete("/tenants/tenant-a", headers=auth)).status_code == 200

    async def test_jwt_with_the_wrong_secret_is_refused(self, client: httpx.AsyncClient) -> None:
        auth = self.bearer(tenant_jwt("another-secret-of-sufficient-length!", "tenant-a"))
        assert_unauthorized(await client.post("/tenants", json={"id": "tenant-a"}, headers=auth))

    async def test_missing_jwt_is_refused(self, client: httpx.AsyncClient) -> None:
        assert_unauthorized(await client.post("/tenants", json={"id": "tenant-a"}))
        assert_unauthorized(await client.get("/tenants/tenant-a"))

    async def test_stale_jwt_is_refused(self, client: httpx.AsyncClient) -> None:
        auth = self.bearer(tenant_jwt(TENANT_SECRET, "tenant-a", exp_in=-3600))
        assert_unauthorized(await client.post("/tenants", json={"id": "tenant-a"}, headers=auth))

    async def test_jwt_of_one_tenant_cannot_manage_another(self, client: httpx.AsyncClient) -> None:
        a = self.bearer(tenant_jwt(TENANT_SECRET, "tenant-a"))
        b = self.bearer(tenant_jwt(TENANT_SECRET, "tenant-b"))
        assert (await client.post("/tenants", json={"id": "tenant-b"}, headers=b)).is_success
        assert_unauthorized(await client.get("/tenants/tenant-b", headers=a))
        assert_unauthorized(await client.delete("/tenants/tenant-b", headers=a))
        assert_unauthorized(
            await client.post("/tenants/tenant-b/fcm_v1", files={"credentials": "{}"}, headers=a)
        )
        assert (await client.get("/tenants/tenant-b", headers=b)).status_code == 200
