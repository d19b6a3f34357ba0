"""Campaign ids are never reused on SQLite either.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

SQLite gives a new row the largest row id plus one, so deleting the newest campaign and
creating another gave the new one the deleted one's id: a client holding the old id (a retried
DELETE, a stale detail link) reached the new campaign. PostgreSQL's sequence never reuses one.
``campaign_ids`` is an AUTOINCREMENT counter (SQLite remembers the largest id it ever gave
in ``sqlite_sequence``); on SQLite a campaign takes its id from it. It exists on PostgreSQL too,
empty, so that both databases have the models' schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_ids",
        sa.Column("id", sa.Integer(), primary_key=True),
        sqlite_autoincrement=True,
    )
    if op.get_bind().dialect.name == "sqlite":
        # The counter starts after the campaigns that exist.
        op.execute(
            "INSERT INTO campaign_ids (id) SELECT max(id) FROM campaigns HAVING count(*) > 0"
        )
        op.execute("DELETE FROM campaign_ids")


def downgrade() -> None:
    op.drop_table("campaign_ids")
