"""Service status, admin authentication, and the error format outside dialect routes."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import httpx
import pytest

from clarion import __version__
from tests.support import assert_error, assert_ok, envelope


async def test_status_reports_name_version_and_times(client: httpx.AsyncClient) -> None:
    data = assert_ok(await client.get("/push/service/status"))["responseObject"]
    assert data["applicationName"] == "clarion"
    assert data["version"] == __version__
    assert set(data) == {
        "applicationName",
        "applicationDisplayName",
        "applicationEnvironment",
        "version",
        "buildTime",
        "timestamp",
    }
    for field in ("buildTime", "timestamp"):
        assert datetime.fromisoformat(data[field]).utcoffset() is not None


async def test_unknown_path_and_method_use_the_error_format(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/push/nothing-here"), "ERROR_GENERIC", status=404)
    assert_error(await client.get("/admin/app/create"), "ERROR_GENERIC", status=405)


async def test_admin_is_open_by_default(client: httpx.AsyncClient) -> None:
    assert_ok(await client.get("/admin/app/list"))


class TestAdminTokenAlone:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_token": "t0ken-for-admins"}

    async def test_the_challenge_names_bearer(self, client: httpx.AsyncClient) -> None:
        refused = await client.get("/admin/app/list")
        assert_error(refused, "ERROR_UNAUTHORIZED", status=401)
        assert refused.headers["www-authenticate"] == 'Bearer realm="clarion"'


class TestAdminToken:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_token": "t0ken-for-admins", "admin_username": "ops", "admin_password": "pw"}

    async def test_missing_or_wrong_credentials_are_401(self, client: httpx.AsyncClient) -> None:
        missing = await client.get("/admin/app/list")
        assert_error(missing, "ERROR_UNAUTHORIZED", status=401)
        # The schemes configured, each a challenge (it named Basic alone, also for a token).
        challenge = 'Bearer realm="clarion", Basic realm="clarion"'
        assert missing.headers["www-authenticate"] == challenge
        wrong = {"authorization": "Bearer nope"}
        assert_error(await client.get("/admin/app/list", headers=wrong), "ERROR_UNAUTHORIZED", 401)
        bad_basic = {"authorization": "Basic %%%"}
        assert_error(
            await client.get("/admin/app/list", headers=bad_basic), "ERROR_UNAUTHORIZED", 401
        )
        response = await client.post(
            "/admin/app/create", json=envelope(appId="sneaky"), auth=("ops", "wrong")
        )
        assert_error(response, "ERROR_UNAUTHORIZED", status=401)
        listed = await client.get(
            "/admin/app/list", headers={"authorization": "Bearer t0ken-for-admins"}
        )
        assert assert_ok(listed)["responseObject"]["applicationList"] == []

    async def test_bearer_token_and_basic_auth_are_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        token = {"authorization": "Bearer t0ken-for-admins"}
        assert_ok(
            await client.post("/admin/app/create", json=envelope(appId="app-1"), headers=token)
        )
        basic = "Basic " + base64.b64encode(b"ops:pw").decode()
        listed = await client.get("/admin/app/list", headers={"authorization": basic})
        assert [a["appId"] for a in assert_ok(listed)["responseObject"]["applicationList"]] == [
            "app-1"
        ]

    async def test_push_endpoints_are_not_behind_admin_auth(
        self, client: httpx.AsyncClient
    ) -> None:
        assert_ok(await client.get("/push/service/status"))
        response = await client.post(
            "/push/device/create",
            json=envelope(appId="nope-app", token="t", platform="ios", activationId="a"),
        )
        assert_error(response, "ERROR_GENERIC")
