"""Property: no request to a PowerAuth endpoint gets a 5xx or leaves the dialect's format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.app import create_app
from tests.conftest import make_settings
from tests.support import apns_p8, b64, service_account

FIELDS = [
    "appId",
    "token",
    "platform",
    "environment",
    "activationId",
    "activationIds",
    "userId",
    "activationStatus",
    "bundle",
    "keyId",
    "teamId",
    "privateKeyBase64",
    "projectId",
    "clientId",
    "clientSecret",
    "includeIos",
    "includeAndroid",
    "includeHuawei",
]
PLAUSIBLE = st.sampled_from(
    [
        "mobile-app",
        "ios",
        "android",
        "huawei",
        "APNS",
        "production",
        "development",
        "ACTIVE",
        "REMOVED",
        "x",
        "",
        " ",
        "\u0000",
        "a" * 300,
        "é✓",
        "\ud800",
        "a\udfff",
        b64(apns_p8()),
        b64(service_account()),
        b64("garbage"),
        "====",
        "mobile-app\n",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    PLAUSIBLE,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
REQUEST_OBJECTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8)
BODIES = st.one_of(
    REQUEST_OBJECTS.map(lambda obj: json.dumps({"requestObject": obj}).encode()),
    VALUES.map(lambda v: json.dumps({"requestObject": v}).encode()),
    VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.just(b""),
    st.just(b'{"requestObject": {"appId": "mobile-app"'),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('prop')) / 'clarion.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    app = create_app(make_settings(url))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        created = test_client.post(
            "/admin/app/create", json={"requestObject": {"appId": "mobile-app"}}
        )
        assert created.status_code in (200, 400)  # PostgreSQL's database is shared by the run
        yield test_client


def powerauth_routes() -> list[tuple[str, str]]:
    app = create_app(make_settings("sqlite+aiosqlite:///unused.db"))
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if path.startswith(("/push/", "/admin/", "/inbox/"))
    ]


ROUTES = powerauth_routes()


def test_every_powerauth_route_is_covered() -> None:
    paths = {path for _, path in ROUTES}
    assert {"/push/device/create", "/admin/app/ios/update", "/admin/app/apns"} <= paths
    assert len(ROUTES) >= 30


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    body=BODIES,
    query=st.dictionaries(st.sampled_from(["appId", "x"]), st.text(max_size=10), max_size=2),
)
def test_no_input_gets_a_5xx_or_a_foreign_error_format(
    client: TestClient, route: tuple[str, str], body: bytes, query: dict[str, Any]
) -> None:
    method, path = route
    response = client.request(
        method, path, content=body, params=query, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, (method, path, body, response.text)
    data = response.json()
    assert data["status"] in ("OK", "ERROR")
    if data["status"] == "ERROR":
        assert response.status_code == 400
        assert data["responseObject"]["code"] in (
            "ERROR_REQUEST",
            "ERROR_GENERIC",
            "ERROR_PA_SERVER_COMM",
            "ERROR_MESSAGE_NOT_FOUND",
        )
        message = data["responseObject"]["message"]
        assert message and "Traceback" not in message and len(message) < 400
