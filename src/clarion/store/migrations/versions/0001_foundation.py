"""Foundation: applications, credentials, devices, the local activation directory.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clarion.store.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_applications"),
        sa.UniqueConstraint("app_id", name="uq_applications_app_id"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=True),
        sa.Column("bundle", sa.String(255), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("team_id", sa.String(64), nullable=True),
        sa.Column("environment", sa.String(16), nullable=True),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rejected_reason", sa.String(512), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_credentials_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.UniqueConstraint(
            "application_id", "platform", name="uq_credentials_application_id_platform"
        ),
    )
    op.create_index("ix_credentials_application_id", "credentials", ["application_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("token", sa.String(512), nullable=False),
        sa.Column("environment", sa.String(16), nullable=True),
        sa.Column("activation_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_devices_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("activation_id", "token", name="uq_devices_activation_id_token"),
    )
    op.create_index("ix_devices_activation_id", "devices", ["activation_id"])
    op.create_index("ix_devices_application_id_token", "devices", ["application_id", "token"])
    op.create_index("ix_devices_user_id_application_id", "devices", ["user_id", "application_id"])
    op.create_table(
        "activations",
        sa.Column("activation_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("activation_id", name="pk_activations"),
    )


def downgrade() -> None:
    op.drop_table("activations")
    op.drop_index("ix_devices_user_id_application_id", table_name="devices")
    op.drop_index("ix_devices_application_id_token", table_name="devices")
    op.drop_index("ix_devices_activation_id", table_name="devices")
    op.drop_table("devices")
    op.drop_index("ix_credentials_application_id", table_name="credentials")
    op.drop_table("credentials")
    op.drop_table("applications")
