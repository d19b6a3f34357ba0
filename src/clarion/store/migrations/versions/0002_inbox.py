"""Inbox: messages per user, the applications each is for, and the indexes list and count use.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clarion.store.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("summary", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_messages"),
    )
    op.create_index(
        "ix_inbox_messages_user_id_created_at_id",
        "inbox_messages",
        ["user_id", "created_at", "id"],
    )
    op.create_index(
        "ix_inbox_messages_unread",
        "inbox_messages",
        ["user_id", "created_at", "id"],
        postgresql_where=sa.text("NOT read"),
        sqlite_where=sa.text("read = 0"),
    )
    op.create_table(
        "inbox_message_applications",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["inbox_messages.id"],
            name="fk_inbox_message_applications_message_id_inbox_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_inbox_message_applications_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "message_id", "application_id", name="pk_inbox_message_applications"
        ),
    )
    op.create_index(
        "ix_inbox_message_applications_application_id",
        "inbox_message_applications",
        ["application_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_inbox_message_applications_application_id", table_name="inbox_message_applications"
    )
    op.drop_table("inbox_message_applications")
    op.drop_index("ix_inbox_messages_unread", table_name="inbox_messages")
    op.drop_index("ix_inbox_messages_user_id_created_at_id", table_name="inbox_messages")
    op.drop_table("inbox_messages")
