"""Campaigns, their users, and the pages of their live sends.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clarion.store.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("notification", sa.JSON(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("message_id", BigId, nullable=True),
        sa.Column("planned_through", sa.String(255), nullable=True),
        sa.Column("planned", sa.Boolean(), nullable=False),
        sa.Column("devices_total", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_campaigns_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["push_messages.id"],
            name="fk_campaigns_message_id_push_messages",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )
    op.create_index("ix_campaigns_application_id", "campaigns", ["application_id"])
    op.create_table(
        "campaign_users",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "user_id", name="pk_campaign_users"),
    )

    op.create_table(
        "campaign_pages",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("upto", sa.String(255), nullable=False),
        sa.Column("after", sa.String(255), nullable=True),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_pages_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "upto", name="pk_campaign_pages"),
    )


def downgrade() -> None:
    op.drop_table("campaign_pages")
    op.drop_table("campaign_users")
    op.drop_index("ix_campaigns_application_id", table_name="campaigns")
    op.drop_table("campaigns")
