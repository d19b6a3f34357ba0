"""A PostgreSQL URL's libpq-style query parameters, translated once for both of clarion's
ways to PostgreSQL: SQLAlchemy's asyncpg dialect and the asyncpg pool of the readers."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import URL, make_url

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# What a PostgreSQL URL's query may hold: libpq's parameters as a provider's connection string
# has them, and asyncpg's own ``ssl`` (a mode, as sslmode). ``host`` and ``port`` (a Unix
# socket directory, and its port) stay in the URL, where SQLAlchemy and asyncpg both read them.
URL_PARAMETERS = (
    "sslmode",
    "ssl",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "host",
    "port",
)
_KEPT_IN_URL = ("host", "port")


def asyncpg_connect_args(url: URL) -> tuple[URL, dict[str, Any]]:
    """A PostgreSQL URL without its libpq-style query parameters, and what asyncpg's
    ``connect()`` and ``create_pool()`` take for them (``ssl``, ``timeout``,
    ``server_settings``). ValueError names a parameter or value clarion cannot use."""
    query: dict[str, str] = {}
    for name, value in url.query.items():
        if name not in URL_PARAMETERS:
            raise ValueError(
                f"unknown database URL parameter {name!r} (known: {', '.join(URL_PARAMETERS)})"
            )
        if name not in _KEPT_IN_URL:
            if not isinstance(value, str):
                raise ValueError(f"database URL parameter {name!r} is given more than once")
            query[name] = value
    args: dict[str, Any] = {}
    tls = _ssl_argument(query)
    if tls is not None:
        args["ssl"] = tls
    if "connect_timeout" in query:
        args["timeout"] = _connect_timeout(query["connect_timeout"])
    if "application_name" in query:
        args["server_settings"] = {"application_name": query["application_name"]}
    kept = {name: value for name, value in url.query.items() if name in _KEPT_IN_URL}
    return url.set(query=kept), args


def _ssl_argument(query: Mapping[str, str]) -> str | ssl.SSLContext | None:
    """asyncpg's ``ssl``: the mode itself (asyncpg implements each as libpq does, ``prefer``
    falling back to plain), or a context when certificate files are named; None: asyncpg's
    default (PGSSLMODE, else prefer)."""
    modes = {query[name] for name in ("sslmode", "ssl") if name in query}
    if len(modes) > 1:
        raise ValueError("the database URL's sslmode and ssl differ: give one of them")
    mode = modes.pop() if modes else None
    if mode is not None and mode not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, not {mode!r}")
    rootcert, cert, key = (query.get(name) for name in ("sslrootcert", "sslcert", "sslkey"))
    if rootcert is None and cert is None and key is None:
        return mode
    if rootcert == "system" and mode is None:
        mode = "verify-full"  # as libpq: the system's CAs are only worth it with the host checked
    return _ssl_context(mode, rootcert, cert, key)


def _ssl_context(
    mode: str | None, rootcert: str | None, cert: str | None, key: str | None
) -> ssl.SSLContext:
    """TLS as libpq does it for ``require`` and the ``verify-*`` modes with these files."""
    if mode not in ("require", "verify-ca", "verify-full"):
        raise ValueError(
            "sslrootcert, sslcert and sslkey need sslmode require, verify-ca or verify-full"
        )
    if rootcert == "system" and mode != "verify-full":
        raise ValueError("sslrootcert=system needs sslmode=verify-full")
    if rootcert is None and mode != "require":
        raise ValueError(f"sslmode={mode} needs sslrootcert: a CA file, or system")
    if key is not None and cert is None:
        raise ValueError("sslkey needs sslcert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify-full"
    if rootcert == "system":
        context.load_default_certs()
    elif rootcert is not None:  # with require too: libpq then verifies the chain (verify-ca)
        _load("sslrootcert", rootcert, lambda: context.load_verify_locations(cafile=rootcert))
    else:
        context.verify_mode = ssl.CERT_NONE  # require without a CA: encrypted, unverified
    if cert is not None:
        _load("sslcert", cert, lambda: context.load_cert_chain(cert, keyfile=key))
    return context


def _load(name: str, path: str, load: Callable[[], None]) -> None:
    try:
        load()
    except OSError as exc:  # ssl.SSLError too: not PEM, or a key that does not match
        reason = exc.strerror or str(exc)
        raise ValueError(f"database URL {name}: cannot use {path}: {reason}") from None


def _connect_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"connect_timeout must be a positive number of seconds, not {value!r}")
    return seconds


def database_address(url: str) -> str:
    """Where a database URL points, for messages: ``host:port`` (or the SQLite file), never
    the password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    port = parsed.port or 5432
    hosts = parsed.query.get("host")  # a Unix socket directory, or several "host:port"
    if hosts is not None:
        return hosts if isinstance(hosts, str) else ",".join(hosts)
    host = parsed.host or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
