"""Telling "the database could not be reached" from "the database answered no"."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# asyncpg's errors for a server that is not there (or not yet, or no longer, taking work).
_ASYNCPG_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def database_unavailable(exc: BaseException) -> bool:
    """True for a failure to reach the database or get a connection to it (down, restarting,
    unreachable, its pool exhausted, SQLite's file locked past the busy timeout): a caller may
    try again later. False for an answer the database gave (a constraint, a syntax error)."""
    if isinstance(exc, (PoolTimeout, OSError, TimeoutError, *_ASYNCPG_UNAVAILABLE)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        original = exc.orig
        if isinstance(exc, OperationalError) and "locked" in str(original):
            return True  # SQLite: another writer held the file past the busy timeout
        return original is not None and database_unavailable(original)
    cause = exc.__cause__
    return cause is not None and cause is not exc and database_unavailable(cause)


DATABASE_UNAVAILABLE = "The database is unavailable: try again shortly."
RETRY_AFTER_OUTAGE = 5  # seconds a request refused for an outage is told to wait


def first_line(exc: BaseException) -> str:
    """The error's class and the first line of its message (the driver's, for a wrapped one,
    which may go on for pages with the statement and its parameters)."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(detail).strip().splitlines()
    message = text[0] if text else ""
    if len(message) > 200:
        message = message[:199] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
