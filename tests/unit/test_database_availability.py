"""Which failures mean "the database could not be reached" (503, try again) and which are an
answer it gave (a constraint: the request's own fault or a bug)."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from clarion.store.availability import database_unavailable, first_line


def wrapped(
    kind: type[DBAPIError], orig: BaseException, *, invalidated: bool = False
) -> DBAPIError:
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


def test_unreachable_servers_and_exhausted_pools_are_unavailability() -> None:
    assert database_unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert database_unavailable(PoolTimeout("QueuePool limit of size 16 overflow 16 reached"))
    assert database_unavailable(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert database_unavailable(asyncpg.exceptions.TooManyConnectionsError("too many"))
    assert database_unavailable(wrapped(OperationalError, ConnectionResetError()))
    assert database_unavailable(wrapped(DBAPIError, Exception("closed"), invalidated=True))
    locked = sqlite3.OperationalError("database is locked")
    assert database_unavailable(wrapped(OperationalError, locked))
    chained = RuntimeError("claim failed")
    chained.__cause__ = ConnectionRefusedError()
    assert database_unavailable(chained)


def test_answers_the_database_gave_are_not() -> None:
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert not database_unavailable(wrapped(IntegrityError, duplicate))
    assert not database_unavailable(wrapped(ProgrammingError, Exception("syntax error")))
    assert not database_unavailable(
        wrapped(OperationalError, sqlite3.OperationalError("no such table: x"))
    )
    assert not database_unavailable(ValueError("bad input"))


def test_first_line_keeps_the_class_and_one_line() -> None:
    error = OperationalError(
        "SELECT a_very_long_statement", {"p": 1}, ConnectionResetError("reset")
    )
    line = first_line(error)
    assert line.startswith("OperationalError: ") and "\n" not in line
