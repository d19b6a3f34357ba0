"""Many rows in one statement on the driver, for the hot write paths (accepted messages, the
delivery ledger).

SQLAlchemy's ``insert(...)`` with a list of rows applies every column's bind processor to every
row and, through the ORM, keeps unit-of-work bookkeeping per row: for 5,000 accepted messages
that was about a sixth of the server's event-loop time in ``bench/send.py``. Here a value is
converted for the driver the way SQLAlchemy would (``bind``), but a value shared by every row
(a timestamp, an application) is converted once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Dialect

SQLITE_ROWS = 500  # rows per statement on SQLite: 7 columns make 3,500 of its 32,766 variables


@lru_cache(maxsize=128)
def bind(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The function SQLAlchemy applies to a value of ``column`` before the driver sees it (the
    identity where it applies none): a timestamp becomes SQLite's text form, say."""
    process = column.type.bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


@lru_cache(maxsize=64)
def sqlite_values(table: str, columns: Sequence[str], rows: int, suffix: str = "") -> str:
    """``INSERT INTO table (columns) VALUES (?, ...), ... suffix`` for ``rows`` rows (SQLite's
    driver caches the prepared statement by its text)."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - names are constants
        + ", ".join([one] * rows)
        + suffix
    )
