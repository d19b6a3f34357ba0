"""Property: no query to an inbox route gets a 5xx or an error outside the dialect's format."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.app import create_app
from tests.conftest import make_settings

APP = "mobile-app"


ROUTES = [
    ("GET", "/inbox/messages/list"),
    ("GET", "/inbox/messages/count"),
    ("GET", "/inbox/messages/detail"),
    ("PUT", "/inbox/messages/read"),
    ("PUT", "/inbox/messages/read-all"),
]
QUERY_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [APP, f"{APP},{APP}", ",", "-1", "0", "1001", "99999999999999999999", "true", "\x00"]
    ),
    st.sampled_from(["a" * 300, str(uuid.UUID(int=7)), "u" * 255]),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sync_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('inbox')) / 'clarion.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as test_client:
        test_client.post("/admin/app/create", json={"requestObject": {"appId": APP}})
        yield test_client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    query=st.dictionaries(
        st.sampled_from(
            ["userId", "appId", "applications", "messageId", "id", "page", "size", "onlyUnread"]
        ),
        QUERY_VALUES,
        max_size=5,
    ),
)
def test_no_inbox_query_gets_a_5xx(
    sync_client: TestClient, route: tuple[str, str], query: dict[str, str]
) -> None:
    method, path = route
    response = sync_client.request(method, path, params=query)
    assert response.status_code in (200, 400), (method, path, query, response.text)
    data = response.json()
    if response.status_code == 400:
        assert data["status"] == "ERROR"
        assert data["responseObject"]["code"] in (
            "ERROR_REQUEST",
            "ERROR_GENERIC",
            "ERROR_MESSAGE_NOT_FOUND",
        )
    else:
        assert data["status"] == "OK"
