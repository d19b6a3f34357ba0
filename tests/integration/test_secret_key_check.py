"""clarion refuses to start with a key that cannot open the stored provider credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.core.secretbox import SecretKeyError
from clarion.core.services import Services, open_services
from tests.conftest import TEST_SECRET_KEY, make_settings
from tests.support import apns_p8


async def store_apns(services: Services, app_id: str) -> None:
    await services.apps.create(app_id)
    await services.apps.set_apns(
        app_id,
        bundle="com.example.app",
        key_id="KEYID12345",
        team_id="TEAMID1234",
        environment=None,
        private_key_pem=apns_p8(),
    )


async def store_credentials(database_url: str, **settings: object) -> None:
    services = await open_services(make_settings(database_url, **settings))
    try:
        await store_apns(services, "mobile-app")
    finally:
        await services.close()


async def test_a_wrong_secret_key_stops_the_start(services: Services, database_url: str) -> None:
    await store_apns(services, "key-check-app")  # in the database emptied for this test
    with pytest.raises(SecretKeyError, match="not the key the stored provider credentials"):
        await open_services(make_settings(database_url, secret_key="another-key-0123456789abcdef"))
    services = await open_services(make_settings(database_url, secret_key=TEST_SECRET_KEY))
    await services.close()  # the right key still starts


async def test_a_lost_key_file_is_not_silently_replaced(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'clarion.db'}"
    await store_credentials(url, secret_key=None)
    key_file = tmp_path / "clarion.db.key"
    original = key_file.read_bytes()
    key_file.rename(tmp_path / "moved.key")
    with pytest.raises(SecretKeyError, match=r"key file .* is missing"):
        await open_services(make_settings(url, secret_key=None))
    assert not key_file.exists()  # no new key left behind to make it worse
    (tmp_path / "moved.key").rename(key_file)
    services = await open_services(make_settings(url, secret_key=None))
    await services.close()
    assert key_file.read_bytes() == original


async def test_a_new_database_gets_a_key_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    services = await open_services(make_settings(url, secret_key=None))
    await services.close()
    assert (tmp_path / "fresh.db.key").exists()
