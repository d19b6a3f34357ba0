"""The inbox's hot queries are answered from its indexes, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Executable, text

from clarion.core import inbox
from clarion.core.services import Services


async def plan(services: Services, statement: Executable) -> str:
    """The query plan of ``statement``, with the table scan ruled out where the planner may
    prefer it to an index only because the tables are empty."""
    db = services.db
    sql = str(statement.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
    async with db.transaction() as session:
        if db.dialect == "postgresql":
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            rows = await session.execute(text("EXPLAIN " + sql))
        else:
            rows = await session.execute(text("EXPLAIN QUERY PLAN " + sql))
        return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("only_unread", [False, True])
async def test_list_reads_one_users_range_of_an_index(
    services: Services, only_unread: bool
) -> None:
    statement = inbox._LIST[only_unread, False].params(user_id="u", limit=20, offset=0)
    found = await plan(services, statement)
    index = "ix_inbox_messages_unread" if only_unread else "ix_inbox_messages_user_id_created_at"
    assert index in found, found
    assert "TEMP B-TREE" not in found and "Sort" not in found, found  # no sort step


async def test_unread_count_uses_the_partial_unread_index(services: Services) -> None:
    found = await plan(services, inbox._COUNT_UNREAD.params(user_id="u", app_pk=1, app_id="a"))
    assert "ix_inbox_messages_unread" in found, found
    assert "pk_inbox_message_applications" in found or "autoindex" in found, found
