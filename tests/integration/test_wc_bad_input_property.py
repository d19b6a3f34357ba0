"""Property: no request to a WalletConnect route gets a 5xx or leaves the FAILED format."""

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
from tests.support import apns_p8, service_account
from tests.wc_support import cleartext_blob

FIELDS = [
    "client_id", "type", "token", "always_raw", "id", "payload", "topic", "flags", "blob",
    "tag", "message",
]  # fmt: skip
PLAUSIBLE = st.sampled_from(
    [
        "noop", "APNS", "apns-sandbox", "fcm", "fcm_v1", "pigeon", "did:key:", "did:key:abc",
        "wallet", "", " ", "\u0000", "a" * 300, "b" * 5000, "é✓", cleartext_blob(), "!!!",
        "0000-0000-0000-0000", 0, 1, 16, -1, 2**32, 2**40, True, None, 1.5, "\ud800",
        "a\udfff",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
    PLAUSIBLE,
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)
    ),
    max_leaves=8,
)
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6)
PAYLOADS = st.fixed_dictionaries(
    {"id": VALUES, "payload": st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4)}
)
BODIES = st.one_of(
    OBJECTS.map(lambda obj: json.dumps(obj).encode()),
    PAYLOADS.map(lambda obj: json.dumps(obj).encode()),
    VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.just(b""),
    st.just(b'{"client_id": "x", "type": "noop"'),
)
SEGMENTS = st.sampled_from(
    ["wallet", "0000-0000-0000-0000", "tenant-a", "x", "a" * 300, "%00", "é", "%ED%A0%80", "%FF"]
)
ROUTES = [
    ("POST", "/clients"),
    ("DELETE", "/clients/{c}"),
    ("POST", "/clients/{c}"),
    ("POST", "/{t}/clients"),
    ("DELETE", "/{t}/clients/{c}"),
    ("POST", "/{t}/clients/{c}"),
    ("POST", "/tenants"),
    ("GET", "/tenants/{t}"),
    ("DELETE", "/tenants/{t}"),
    ("POST", "/tenants/{t}/apns"),
    ("DELETE", "/tenants/{t}/apns"),
    ("POST", "/tenants/{t}/fcm_v1"),
    ("DELETE", "/tenants/{t}/fcm_v1"),
    ("POST", "/tenants/{t}/fcm"),
    ("GET", "/rate_limit_test"),
]
FORM_FIELDS = st.dictionaries(
    st.sampled_from(
        ["apns_topic", "apns_certificate", "apns_certificate_password", "apns_pkcs8_pem",
         "apns_key_id", "apns_team_id", "credentials"]
    ),
    st.one_of(
        st.text(max_size=30),
        st.sampled_from([apns_p8().decode(), json.dumps(service_account()), "AAAA", "\u0000"]),
    ),
    max_size=5,
)  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('wcprop')) / 'clarion.db'}"
    else:
        url = request.getfixturevalue("postgres_url")  # shared by the run: state may exist
    app = create_app(make_settings(url, wc_rate_limit_per_minute=0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert test_client.post("/tenants", json={"id": "tenant-a"}).status_code == 200
        body = {"client_id": "wallet", "type": "noop", "token": "tok"}
        assert test_client.post("/clients", json=body).status_code == 200
        yield test_client


def check_failed_body(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        data = response.json()
        if isinstance(data, dict) and data.get("status") == "FAILED":
            for item in data.get("errors", []):
                assert set(item) == {"name", "description"} and item["description"]
                assert "Traceback" not in item["description"]
            for item in data.get("fields", []):
                assert set(item) == {"field", "description", "location"}
                assert item["location"] in ("body", "query", "header", "path")
            assert data.get("errors") or data.get("fields")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), body=BODIES, tenant=SEGMENTS, client_id=SEGMENTS)
def test_no_json_input_gets_a_5xx_or_a_foreign_error_format(
    client: TestClient, route: tuple[str, str], body: bytes, tenant: str, client_id: str
) -> None:
    method, template = route
    path = template.replace("{t}", tenant).replace("{c}", client_id)
    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    check_failed_body(response)
    if response.status_code == 400:
        assert response.json()["status"] == "FAILED"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/tenants/tenant-a/apns", "/tenants/tenant-a/fcm_v1"]),
    form=FORM_FIELDS,
)
def test_no_form_gets_a_5xx(client: TestClient, path: str, form: dict[str, str]) -> None:
    check_failed_body(client.post(path, data=form))


def test_bad_fields_are_named_with_their_location(client: TestClient) -> None:
    seed = {"topic": "t", "flags": 1, "blob": "b"}
    noop = {"client_id": "c", "type": "noop", "token": "t"}
    cases: list[tuple[str, Any, str]] = [
        ("/clients", {"type": "noop", "token": "t"}, "client_id"),
        ("/clients", {"client_id": "c", "token": "t"}, "type"),
        ("/clients", {"client_id": "c", "type": "noop"}, "token"),
        ("/clients", {**noop, "token": ""}, "token"),
        ("/clients", {**noop, "client_id": 7}, "client_id"),
        ("/clients", {**noop, "always_raw": "yes"}, "always_raw"),
        ("/clients/wallet", {"payload": seed}, "id"),
        ("/clients/wallet", {"id": "m"}, "payload"),
        ("/clients/wallet", {"id": "m", "payload": {**seed, "flags": "1"}}, "payload.flags"),
        ("/clients/wallet", {"id": "m", "payload": {**seed, "blob": "b" * 5000}}, "payload.blob"),
        ("/clients/wallet", {"id": "m", "payload": {"flags": 1, "blob": "b"}}, "payload.topic"),
        ("/clients/wallet", {"id": "m\u0000", "payload": seed}, "id"),
    ]  # fmt: skip
    for path, body, field in cases:
        response = client.post(path, json=body)
        assert response.status_code == 400, (body, response.text)
        fields = response.json()["fields"]
        assert {"field": field, "location": "body"}.items() <= fields[0].items(), (body, fields)
    malformed = client.post("/clients", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["fields"][0]["field"] == "body"
