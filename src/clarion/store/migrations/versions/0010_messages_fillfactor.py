"""PostgreSQL keeps half of each page of ``push_messages`` free for the row's one update.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Every message is written twice: inserted when it is accepted, and updated once when its
delivery is complete (``completed_at``). With full pages (the default fillfactor, 100) the
update cannot stay on the row's page: PostgreSQL writes the new version elsewhere and adds an
entry for it to each of the table's three indexes. With half of each page free, every such
update is a heap-only (HOT) update on its own page, without index entries: in bench/send.py
(100,000 messages) 96,499 of 96,500 updates were HOT against 2,028, and PostgreSQL's CPU per
push went from 41 to 34 µs (bench/README.md, session 25). The table takes up to twice the
pages; its rows are deleted after ``CLARION_RETENTION_DAYS``.

The setting applies to pages written from now on; existing pages stay as they are until the
table is rewritten (``VACUUM FULL``), which this migration does not do. SQLite has no such
setting.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE push_messages SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE push_messages RESET (fillfactor)")
