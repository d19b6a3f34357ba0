"""Indexes for retention: old messages and WalletConnect message ids found by their age.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

The worker deletes messages and WalletConnect message ids older than
``CLARION_RETENTION_DAYS`` in batches (``clarion.core.retention``). Each batch finds its rows
by ``created_at``; without these indexes every batch would scan the whole table. Both columns
only grow with time, so the indexes are appended to, not reshuffled, by the writes that pushes
make.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_push_messages_created_at", "push_messages", ["created_at"])
    op.create_index("ix_wc_messages_created_at", "wc_messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_wc_messages_created_at", table_name="wc_messages")
    op.drop_index("ix_push_messages_created_at", table_name="push_messages")
