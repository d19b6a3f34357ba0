"""PostgreSQL URL parameters as a provider's connection string has them, translated once into
asyncpg's connect() arguments; a parameter clarion cannot use is a one-line settings error."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from sqlalchemy import make_url

from clarion.config import Settings
from clarion.store.urls import asyncpg_connect_args, database_address

BASE = "postgresql+asyncpg://u:secret@db.example.com:6543/clarion"


def translate(query: str) -> tuple[str, dict[str, object]]:
    url, args = asyncpg_connect_args(make_url(f"{BASE}?{query}" if query else BASE))
    return url.render_as_string(hide_password=False), args


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clarion test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_a_url_without_parameters_is_left_as_it_is() -> None:
    assert translate("") == (BASE, {})


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_sslmode_and_asyncpgs_ssl_become_asyncpgs_ssl_mode(mode: str) -> None:
    assert translate(f"sslmode={mode}") == (BASE, {"ssl": mode})
    assert translate(f"ssl={mode}") == (BASE, {"ssl": mode})
    assert translate(f"ssl={mode}&sslmode={mode}") == (BASE, {"ssl": mode})


def test_timeout_and_application_name_become_connect_arguments() -> None:
    url, args = translate("sslmode=require&connect_timeout=7&application_name=clarion-eu")
    assert url == BASE
    assert args == {
        "ssl": "require",
        "timeout": 7.0,
        "server_settings": {"application_name": "clarion-eu"},
    }


def test_a_unix_socket_directory_stays_in_the_url() -> None:
    url, args = translate("host=/var/run/postgresql&port=5433&application_name=x")
    assert url == f"{BASE}?host=%2Fvar%2Frun%2Fpostgresql&port=5433"
    assert args == {"server_settings": {"application_name": "x"}}


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmod=require", "unknown database URL parameter 'sslmod'"),
        ("prepared_statement_cache_size=0", "'prepared_statement_cache_size'"),
        ("sslmode=required", "sslmode must be one of disable, allow, prefer, require"),
        ("ssl=true", "not 'true'"),
        ("sslmode=require&ssl=disable", "sslmode and ssl differ"),
        ("sslmode=require&sslmode=disable", "'sslmode' is given more than once"),
        ("connect_timeout=soon", "connect_timeout must be a positive number of seconds"),
        ("connect_timeout=0", "connect_timeout must be a positive"),
        ("connect_timeout=nan", "connect_timeout must be a positive"),
        ("sslmode=prefer&sslrootcert=/ca.pem", "need sslmode require, verify-ca or verify-full"),
        ("sslmode=verify-full&sslcert=/c.pem", "sslmode=verify-full needs sslrootcert"),
        ("sslmode=require&sslrootcert=system", "sslrootcert=system needs sslmode=verify-full"),
        ("sslmode=require&sslkey=/k.pem", "sslkey needs sslcert"),
        ("sslmode=verify-full&sslrootcert=/no/such/ca.pem", "cannot use /no/such/ca.pem"),
    ],
)
def test_a_parameter_clarion_cannot_use_is_named(query: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        translate(query)


def test_sslrootcert_system_verifies_the_host_with_the_systems_cas() -> None:
    _url, args = translate("sslrootcert=system")
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED


def test_certificate_files_make_a_context_as_libpq_would(tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path)
    _url, args = translate(f"sslmode=verify-full&sslrootcert={cert}&sslcert={cert}&sslkey={key}")
    full = args["ssl"]
    assert isinstance(full, ssl.SSLContext)
    assert full.check_hostname and full.verify_mode is ssl.CERT_REQUIRED
    assert len(full.get_ca_certs()) == 1
    # verify-ca, and require with a CA file (libpq then verifies the chain): no host check.
    for mode in ("verify-ca", "require"):
        _url, args = translate(f"sslmode={mode}&sslrootcert={cert}")
        context = args["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert not context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    # require with only a client certificate: encrypted, the server not verified.
    _url, args = translate(f"sslmode=require&sslcert={cert}&sslkey={key}")
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode is ssl.CERT_NONE


def test_a_key_that_is_not_pem_is_a_clear_error(tmp_path: Path) -> None:
    cert, _key = write_certificate(tmp_path)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="database URL sslcert: cannot use"):
        translate(f"sslmode=require&sslcert={cert}&sslkey={bad}")


def test_settings_refuse_an_unknown_parameter_naming_it() -> None:
    with pytest.raises(ValidationError, match="unknown database URL parameter 'sslmod'"):
        Settings(database_url="postgresql://u@h/db?sslmod=require")
    settings = Settings(database_url="postgres://u@h/db?sslmode=require&application_name=x")
    assert settings.database_url == "postgresql+asyncpg://u@h/db?sslmode=require&application_name=x"


def test_sqlite_urls_keep_their_own_parameters() -> None:
    url = "sqlite+aiosqlite:///file:x.db?mode=ro&uri=true"
    assert Settings(database_url=url).database_url == url


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql+asyncpg://u:secret@db.example.com:6543/x", "db.example.com:6543"),
        ("postgresql+asyncpg://u:secret@db.example.com/x?sslmode=require", "db.example.com:5432"),
        ("postgresql+asyncpg://u:secret@[::1]:5433/x", "[::1]:5433"),
        ("postgresql+asyncpg://u:secret@/x?host=/var/run/postgresql", "/var/run/postgresql"),
        ("postgresql+asyncpg://u:secret@/x", "localhost:5432"),
        ("sqlite+aiosqlite:///./clarion.db", "./clarion.db"),
    ],
)
def test_the_address_names_host_and_port_never_the_password(url: str, address: str) -> None:
    assert database_address(url) == address
    assert "secret" not in database_address(url)
