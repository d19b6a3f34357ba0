"""WalletConnect: client ids on devices, one token per client in a tenant, message-id dedup.

Revision ID: 0003
Revises: 0004 (the lead re-chains revisions at merge time)
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clarion.store.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WC_ONLY = "client_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("client_id", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("always_raw", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_unique_constraint(
            "uq_devices_application_id_client_id", ["application_id", "client_id"]
        )
    op.create_index(
        "uq_devices_application_id_token_wc",
        "devices",
        ["application_id", "token"],
        unique=True,
        sqlite_where=sa.text(WC_ONLY),
        postgresql_where=sa.text(WC_ONLY),
    )
    op.create_table(
        "wc_messages",
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_wc_messages_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("application_id", "client_id", "message_id", name="pk_wc_messages"),
    )


def downgrade() -> None:
    op.drop_table("wc_messages")
    op.drop_index("uq_devices_application_id_token_wc", table_name="devices")
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint("uq_devices_application_id_client_id", type_="unique")
        batch.drop_column("always_raw")
        batch.drop_column("client_id")
