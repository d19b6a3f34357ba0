"""Settings: environment variables, URL normalisation, key file placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.config import DEFAULT_DATABASE_URL, Settings, load_settings, normalise_database_url


def test_default_is_a_sqlite_file_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLARION_DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.is_sqlite and settings.should_auto_migrate
    assert settings.sqlite_path == Path("./clarion.db")
    assert settings.resolved_key_file() == Path("./clarion.db.key")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_urls_get_the_async_drivers(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_postgresql_url_switches_off_auto_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_DATABASE_URL", "postgresql://root@127.0.0.1/test")
    settings = Settings()
    assert not settings.is_sqlite and not settings.should_auto_migrate
    assert settings.resolved_key_file() is None


def test_toml_file_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = 9999\nenvironment = "staging"\n')
    monkeypatch.setenv("CLARION_ENVIRONMENT", "from-env")
    settings = load_settings(config)
    assert settings.port == 9999 and settings.environment == "from-env"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.toml")


def test_secret_key_is_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_SECRET_KEY", "super-secret-value-123")
    assert "super-secret-value-123" not in repr(Settings())


def test_provider_ca_file_must_be_a_readable_pem(tmp_path: Path) -> None:
    """A missing CA file failed every push (each using up its attempts) after a clean start."""
    with pytest.raises(ValueError, match="cannot read the CA file"):
        Settings(provider_ca_file=str(tmp_path / "nonexistent.pem"))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        Settings(provider_ca_file=str(empty))
    good = tmp_path / "ca.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert Settings(provider_ca_file=str(good)).provider_ca_file == str(good)


def test_a_key_of_the_config_file_that_is_no_setting_is_an_error(tmp_path: Path) -> None:
    """A typo was silently ignored, and clarion ran on its defaults."""
    config = tmp_path / "typo.toml"
    config.write_text('databse_url = "postgresql://db/clarion"\nport = 9000\n')
    with pytest.raises(ValueError, match="no such setting: databse_url"):
        load_settings(config)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_settings(broken)


@pytest.mark.parametrize(
    ("name", "shortest", "said"),
    [
        ("CLARION_ADMIN_TOKEN", 16, "at least 16 characters"),
        ("CLARION_WC_TENANT_JWT_SECRET", 32, "at least 32 bytes, as HS256 asks"),
    ],
)
@pytest.mark.parametrize("value", ["", "   ", "short-secret", " " * 40])
def test_a_shared_secret_that_is_empty_or_short_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, shortest: int, said: str, value: str
) -> None:
    # KEY= in an env file turned the check on with "" as the secret (tokens signed with "").
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=said):
        load_settings()
    monkeypatch.setenv(name, "s" * (shortest - 1))
    with pytest.raises(ValueError, match=said):
        load_settings()
    monkeypatch.setenv(name, "s" * shortest)
    assert load_settings() is not None


def test_admin_user_and_password_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_ADMIN_USERNAME", "ops")
    with pytest.raises(ValueError, match="set together"):
        load_settings()
    monkeypatch.setenv("CLARION_ADMIN_PASSWORD", "")
    with pytest.raises(ValueError, match="must not be empty"):
        load_settings()
    monkeypatch.setenv("CLARION_ADMIN_PASSWORD", "pw")
    assert load_settings().admin_username == "ops"
    monkeypatch.delenv("CLARION_ADMIN_USERNAME")
    with pytest.raises(ValueError, match="set together"):
        load_settings()


@pytest.mark.parametrize("tenant", ["", "a b", "x", "clients", "Tenants"])
def test_the_default_tenant_is_a_tenant_id_the_tenant_api_accepts(
    monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    monkeypatch.setenv("CLARION_WC_DEFAULT_TENANT", tenant)
    with pytest.raises(ValueError, match="Tenant id"):
        load_settings()


def test_requiring_client_jwts_needs_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it the audience to check would come from the request's own Host header.
    monkeypatch.setenv("CLARION_WC_REQUIRE_CLIENT_JWT", "true")
    with pytest.raises(ValueError, match="needs CLARION_PUBLIC_URL"):
        load_settings()
    monkeypatch.setenv("CLARION_PUBLIC_URL", "https://push.example.com")
    assert load_settings().wc_require_client_jwt


def test_a_clarion_variable_that_is_no_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # CLARION_DATABASE_URI put a production server on the SQLite default without a word.
    monkeypatch.setenv("CLARION_DATABASE_URI", "postgresql://db.example/clarion")
    with pytest.raises(ValueError, match="no such setting: CLARION_DATABASE_URI"):
        load_settings()
    monkeypatch.delenv("CLARION_DATABASE_URI")
    monkeypatch.setenv("CLARION_TEST_ANYTHING", "1")  # the test suite's own
    monkeypatch.setenv("CLARION_CONFIG_FILE", "/nowhere.toml")  # a multi-process server's
    assert load_settings() is not None


def test_trusted_proxies_are_addresses_as_a_list_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for given, expected in (
        ("10.0.0.1", ["10.0.0.1"]),
        ("10.0.0.1, 10.1.0.0/16", ["10.0.0.1", "10.1.0.0/16"]),
        ('["127.0.0.1", "::1"]', ["127.0.0.1", "::1"]),
    ):
        monkeypatch.setenv("CLARION_WC_TRUSTED_PROXIES", given)
        assert load_settings().wc_trusted_proxies == expected
    # A host name was skipped without a word: every client then counted as the proxy.
    monkeypatch.setenv("CLARION_WC_TRUSTED_PROXIES", '["proxy.internal"]')
    with pytest.raises(ValueError, match=r"'proxy\.internal' is not an IP address or network"):
        load_settings()
    monkeypatch.setenv("CLARION_WC_TRUSTED_PROXIES", "[10.0.0.1")
    with pytest.raises(ValueError, match="JSON list or comma-separated"):
        load_settings()
