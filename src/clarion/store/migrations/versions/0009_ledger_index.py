"""The ledger keeps one index besides its primary key: (message_id, device_id).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``ix_deliveries_message_id_status`` served no query: every read of the ledger names a message
and its devices (the unique (message_id, device_id) index answers it, and its message_id prefix
answers the per-message reads), and the ledger is written once per push. Worse, on PostgreSQL
without fresh statistics (autovacuum off, or the minutes after a burst of sends) the planner
chose it for ``message_id = :m AND device_id = ...``, reading every row of the message on every
page of a campaign: 4.4 s a page at 200,000 rows (bench/campaign.py, pg_stat_statements). Each
push also paid for its entry. Dropped.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_message_id_status", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_message_id_status", "deliveries", ["message_id", "status"])
