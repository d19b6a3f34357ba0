"""One Settings object, from ``CLARION_*`` environment variables and an optional TOML file.

Precedence, highest first: explicit arguments, environment variables, the TOML file, defaults.
Every setting is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from clarion.errors import ClarionError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./clarion.db"
# Shared secrets a caller proves it knows (admin token, WalletConnect tenant JWT secret).
MIN_SECRET_LENGTH = 16
# HS256 keys: RFC 7518 (3.2) asks for at least the hash's size, 256 bits; PyJWT warns below.
MIN_JWT_SECRET_BYTES = 32


def normalise_database_url(url: str) -> str:
    """Map plain ``sqlite://`` and ``postgresql://`` URLs to the async drivers clarion uses;
    ValueError for a PostgreSQL URL parameter clarion cannot use."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain) :]
            break
    if url.startswith("postgresql+asyncpg://"):
        _check_postgresql_parameters(url)
    return url


def _check_postgresql_parameters(url: str) -> None:
    """Translate the URL's query as the store will (``sslmode``, ``connect_timeout``...), so
    that a parameter it cannot use stops the start as a setting, not as a traceback later."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    from clarion.store.urls import asyncpg_connect_args  # here: settings alone need no driver

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # reported where the engine is made: "unusable database URL"
    asyncpg_connect_args(parsed)


def _address_list(value: object) -> object:
    """Proxy addresses as a JSON list or comma-separated, each an IP address or network: an
    entry that is neither (a host name) was skipped without a word, and the rate limit then
    counted every client as the proxy."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("must be a JSON list or comma-separated addresses") from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list):
        for entry in value:
            try:
                ipaddress.ip_network(str(entry), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (host names are not resolved)"
                ) from None
    return value


class Settings(BaseSettings):
    """Everything an operator can set. Built once at start and passed down."""

    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    # Storage
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(
        default=32,
        ge=1,
        description="PostgreSQL: connections each process keeps open for writes (and reads "
        "inside transactions)",
    )
    database_pool_overflow: int = Field(
        default=16,
        ge=0,
        description="PostgreSQL: connections a process may open beyond database_pool_size in "
        "a burst, closed when given back",
    )
    database_read_pool_size: int = Field(
        default=8,
        ge=1,
        description="PostgreSQL: connections each process may open for single-statement reads "
        "(asyncpg directly)",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="Apply migrations on start. Default: yes for SQLite, no for PostgreSQL.",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Key that encrypts provider secrets at rest."
    )
    secret_key_file: Path | None = Field(
        default=None, description="Where the generated key lives (SQLite default only)."
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    environment: str = Field(default="", description="Shown as applicationEnvironment.")
    display_name: str = "clarion push server"
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    admin_token: SecretStr | None = None

    # Logging
    log_level: Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = (
        Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    )
    log_json: bool = False
    max_body_bytes: int = Field(
        default=64 << 20,
        ge=1024,
        description="The largest PowerAuth request body (a batch send of 100,000 messages, a "
        "million campaign user ids); WalletConnect bodies are limited to 1 MiB. Larger: 413.",
    )
    hot_routes: bool = Field(
        default=True,
        description="Answer the hottest routes (relay pushes, sends, device registration, inbox "
        "reads, /health, service status) without FastAPI's routing layer; off: every request "
        "goes through FastAPI (same answers).",
    )

    # PowerAuth behaviour
    apns_use_development: bool = True
    multiple_activations: bool = False
    store_messages: bool = False
    campaign_batch_size: int = Field(default=10_000, ge=1)
    activation_directory: Literal["local", "powerauth"] = "local"
    powerauth_url: str | None = None
    powerauth_username: str | None = None
    powerauth_password: SecretStr | None = None
    powerauth_timeout: float = Field(default=5.0, gt=0)
    powerauth_cache_seconds: float = Field(default=5.0, ge=0)

    # Providers (base URLs are overridable for the emulators)
    apns_production_url: str = "https://api.push.apple.com"
    apns_sandbox_url: str = "https://api.sandbox.push.apple.com"
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str | None = Field(
        default=None, description="OAuth token endpoint; default: the service account's token_uri"
    )
    hms_push_url: str = "https://push-api.cloud.huawei.com"
    hms_token_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"  # noqa: S105
    provider_ca_file: str | None = Field(
        default=None, description="Extra trusted CA (PEM) for provider TLS, e.g. the emulators'"
    )
    provider_timeout: float = Field(default=10.0, gt=0)
    provider_max_in_flight: int = Field(default=1000, ge=1)
    transport_threads: int = Field(
        default=1,
        ge=0,
        le=1,
        description="1: the provider HTTP client runs on a multi-threaded runtime with one "
        "worker thread; 0: on pyreqwest's single-threaded runtime (slower)",
    )
    fcm_concurrency: int = Field(default=500, ge=1)
    hms_concurrency: int = Field(default=16, ge=1)

    # Delivery and workers
    delivery_max_attempts: int = Field(default=10, ge=1)
    delivery_backoff_base: float = Field(default=1.0, ge=0)
    delivery_backoff_cap: float = Field(default=60.0, ge=0)
    run_worker: bool = Field(default=True, description="serve runs a job worker too")
    worker_concurrency: int = Field(default=4, ge=1, description="Jobs a worker runs at once")
    worker_lease_seconds: float = Field(default=30.0, gt=0)
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="clarion worker serves its /metrics (Prometheus) on this port; unset: none",
    )
    worker_poll_interval: float = Field(default=0.5, gt=0)
    worker_grace: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a stopping worker's jobs get to reach a safe point before they "
        "are cancelled (serve's worker and clarion worker's)",
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Days after which workers delete finished jobs and delivered messages "
        "with their ledger rows (0: keep them forever)",
    )
    wc_message_retention_days: float = Field(
        default=0.0,
        ge=0,
        description="Days after which workers delete WalletConnect message ids (0, the "
        "default: never, so an id is pushed at most once ever; once deleted, the same id "
        "would be pushed again)",
    )

    # --- WalletConnect (issue 8) ---------------------------------------------------------
    public_url: str | None = Field(
        default=None,
        description="The server's public base URL (tenant URLs, client JWT audience). "
        "Default: the URL each request came in on. Required with wc_require_client_jwt.",
    )
    wc_default_tenant: str = Field(
        default="0000-0000-0000-0000", description="Tenant of the routes without a tenant id."
    )
    wc_validate_signatures: bool = False
    wc_relay_public_key: str | None = Field(default=None, description="Hex Ed25519 key.")
    wc_signature_max_age: float = Field(default=300.0, gt=0)
    wc_require_client_jwt: bool = False
    wc_tenant_jwt_secret: SecretStr | None = None
    wc_rate_limit_per_minute: int = Field(default=100, ge=0, description="0 disables it.")
    wc_trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(_address_list)] = Field(
        default_factory=list,
        description="Proxy addresses or networks (CIDR) whose X-Forwarded-For is believed: a "
        "JSON list or comma-separated.",
    )
    # Single-tenant credentials of the default tenant, applied on every start (upstream APNS_*).
    wc_apns_topic: str | None = None
    wc_apns_key_file: Path | None = Field(default=None, description="APNs .p8 key (PEM).")
    wc_apns_key_id: str | None = None
    wc_apns_team_id: str | None = None
    wc_apns_certificate_file: Path | None = Field(default=None, description="PKCS#12 file.")
    wc_apns_certificate_password: SecretStr | None = None
    wc_fcm_credentials_file: Path | None = Field(
        default=None, description="FCM HTTP v1 service account JSON."
    )
    # --- end WalletConnect ---------------------------------------------------------------

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("admin_token")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty value (``KEY=`` in an env file) turned the check on with "" as the secret:
        # anyone could then pass as admin with an empty bearer token.
        if value is not None and len(value.get_secret_value().strip()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters (unset it to turn the check off)"
            )
        return value

    @field_validator("wc_tenant_jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty, anyone could sign tenant tokens with ""; short, HS256 is weaker than its hash.
        if value is not None and (
            not value.get_secret_value().strip()
            or len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES
        ):
            raise ValueError(
                f"must be at least {MIN_JWT_SECRET_BYTES} bytes, as HS256 asks (RFC 7518); "
                "unset it to turn the check off"
            )
        return value

    @field_validator("admin_password")
    @classmethod
    def _password_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _client_jwt_audience(self) -> Settings:
        # Without a public URL the audience a client JWT must name is the URL the request came
        # in on, which the caller picks with its Host header: no check at all when required.
        if self.wc_require_client_jwt and not self.public_url:
            raise ValueError(
                "CLARION_WC_REQUIRE_CLIENT_JWT needs CLARION_PUBLIC_URL: client JWTs name it as"
                " their audience (without it the request's own Host header would be the check)"
            )
        return self

    @model_validator(mode="after")
    def _user_with_password(self) -> Settings:
        if (self.admin_username is None) != (self.admin_password is None):
            raise ValueError(
                "CLARION_ADMIN_USERNAME and CLARION_ADMIN_PASSWORD are set together or not at all"
            )
        return self

    @field_validator("wc_default_tenant")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        # The tenant API refused to manage a default tenant named "" or "clients".
        from clarion.core.tenants import check_tenant_id  # the core imports these settings

        try:
            check_tenant_id(value, location="body")
        except ClarionError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("provider_ca_file")
    @classmethod
    def _readable_pem(cls, value: str | None) -> str | None:
        # Checked at start: a missing file failed every push instead, each using up its
        # attempts, while the server said it was ready.
        if value is None:
            return None
        try:
            text = Path(value).read_text(errors="replace")
        except OSError as exc:
            raise ValueError(f"cannot read the CA file {value}: {exc.strerror}") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(f"the CA file {value} holds no PEM certificate")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite URL, or None for in-memory and other databases."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        return Path(path)

    def resolved_key_file(self) -> Path | None:
        """The generated key file: set explicitly, or beside the SQLite database."""
        if self.secret_key_file is not None:
            return self.secret_key_file
        db = self.sqlite_path
        return None if db is None else db.with_name(db.name + ".key")


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build the Settings, reading ``config_file`` (TOML, keys as the field names) when given."""

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return tuple(sources)

    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    if config_file is not None:
        _check_keys(config_file)
    _check_environment()
    return _FromFile(**overrides)  # type: ignore[arg-type]


# CLARION_* variables that are not settings: the config file a multi-process server's children
# read, and the test suite's and benchmarks' own.
_OTHER_VARIABLES = frozenset({"CLARION_CONFIG_FILE"})
_OTHER_PREFIXES = ("CLARION_TEST_", "CLARION_BENCH_")


def _check_environment() -> None:
    """A CLARION_* variable that is no setting (CLARION_DATABASE_URI) is an error: ignored, it
    put a production server on the SQLite default without a word."""
    known = {f"CLARION_{name.upper()}" for name in Settings.model_fields} | _OTHER_VARIABLES
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith("CLARION_")
        and name.upper() not in known
        and not name.upper().startswith(_OTHER_PREFIXES)
    )
    if unknown:
        raise ValueError(
            f"no such setting: {', '.join(unknown)} (the variables are listed in "
            "docs/configuration.md)"
        )


def _check_keys(config_file: Path) -> None:
    """A key that is no setting (a typo: databse_url) is an error, not silently ignored."""
    try:
        with config_file.open("rb") as handle:
            keys = set(tomllib.load(handle))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{config_file} is not valid TOML: {exc}") from None
    unknown = sorted(keys - set(Settings.model_fields))
    if unknown:
        raise ValueError(
            f"{config_file}: no such setting: {', '.join(unknown)} (keys are the names of "
            "docs/configuration.md without CLARION_, in lower case)"
        )
