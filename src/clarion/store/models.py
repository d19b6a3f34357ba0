"""Typed SQLAlchemy 2 models. Every schema change goes through an Alembic migration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Application(Base):
    """A PowerAuth ``appId`` (and, later, a WalletConnect tenant)."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Credential(Base):
    """One platform's provider credentials for an application. The secret is encrypted."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("application_id", "platform"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(16))  # apns | fcm | hms
    auth: Mapped[str] = mapped_column(String(16), default="token")  # apns: token | certificate
    project_id: Mapped[str | None] = mapped_column(String(255))
    bundle: Mapped[str | None] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(16))  # apns: development | production
    client_id: Mapped[str | None] = mapped_column(String(255))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # encrypted private key / client secret
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change
    rejected_reason: Mapped[str | None] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Device(Base):
    """A registration: where a push can go, and whose it is."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("activation_id", "token"),
        Index("ix_devices_application_id_token", "application_id", "token"),
        Index("ix_devices_user_id_application_id", "user_id", "application_id"),
        # WalletConnect (revision 0003): within a tenant a client id has one registration and
        # a token belongs to one client; PowerAuth rows (no client id) may share tokens.
        UniqueConstraint("application_id", "client_id"),
        Index(
            "uq_devices_application_id_token_wc",
            "application_id",
            "token",
            unique=True,
            sqlite_where=text("client_id IS NOT NULL"),
            postgresql_where=text("client_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(512))
    environment: Mapped[str | None] = mapped_column(String(16))
    activation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # WalletConnect (revision 0003): the relay's client id owning this registration, if any.
    client_id: Mapped[str | None] = mapped_column(String(255))
    always_raw: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Activation(Base):
    """The local activation directory: activation -> (user, status)."""

    __tablename__ = "activations"

    activation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


# --- messaging: messages, durable jobs, the delivery ledger -------------------------------

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite rowids are INTEGER PRIMARY KEY


class PushMessage(Base):
    """One accepted message to one user (or one activation) of an application."""

    __tablename__ = "push_messages"
    __table_args__ = (
        Index("ix_push_messages_created_at", "created_at"),  # retention
        # Room on each page for the row's one update (completed_at): migration 0010.
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(255))
    activation_id: Mapped[str | None] = mapped_column(String(64))
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    notification: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    """A durable unit of work (a batch of messages), claimed by workers under a lease."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """The ledger: one row per (message, device), so a retry or restart never sends twice."""

    __tablename__ = "deliveries"
    # The one index every read of the ledger uses (migration 0009 dropped a second).
    __table_args__ = (UniqueConstraint("message_id", "device_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("push_messages.id", ondelete="CASCADE"),
    )
    device_id: Mapped[int] = mapped_column(Integer)  # no FK: the device may be removed later
    platform: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- inbox (issue 7) -------------------------------------------------------------------------


class InboxMessage(Base):
    """A message in one user's inbox. Its applications are in ``inbox_message_applications``."""

    __tablename__ = "inbox_messages"
    __table_args__ = (
        # List, newest first: an index range per user, read backwards, stops after one page.
        Index("ix_inbox_messages_user_id_created_at_id", "user_id", "created_at", "id"),
        # Unread list and unread counts touch only the user's unread messages.
        Index(
            "ix_inbox_messages_unread",
            "user_id",
            "created_at",
            "id",
            postgresql_where=text("NOT read"),
            sqlite_where=text("read = 0"),  # how SQLAlchemy writes NOT read there
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(8))  # text | html
    subject: Mapped[str] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text())
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class InboxMessageApplication(Base):
    """Which applications an inbox message is for (a message may be for several)."""

    __tablename__ = "inbox_message_applications"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_messages.id", ondelete="CASCADE"), primary_key=True
    )
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True, index=True
    )


# --- WalletConnect (revision 0003) ---------------------------------------------------------
# A WalletConnect tenant is an ``Application``; a client is a ``Device`` with a ``client_id``.


class WcMessage(Base):
    """A WalletConnect message id accepted for a client: the triple is pushed at most once.

    Kept when the client unregisters (a re-registered client never gets an old id again);
    dropped with the tenant, or when the client's token moves to another client id.
    """

    __tablename__ = "wc_messages"
    __table_args__ = (Index("ix_wc_messages_created_at", "created_at"),)  # retention

    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- end WalletConnect ---------------------------------------------------------------------
# --- campaigns: one notification to the devices of many users, once per device ------------


class Campaign(Base):
    """A PowerAuth campaign; ``message_id`` is the push message of its live send."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    notification: Mapped[dict[str, Any]] = mapped_column(JSON)
    sent: Mapped[bool] = mapped_column(Boolean, default=False)
    message_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("push_messages.id", ondelete="SET NULL"),
    )
    planned_through: Mapped[str | None] = mapped_column(String(255))  # fan-out cursor (user id)
    planned: Mapped[bool] = mapped_column(Boolean, default=False)  # every page is scheduled
    devices_total: Mapped[int] = mapped_column(Integer, default=0)
    # Final outcomes so far, added with each chunk's ledger rows (the ledger stays the truth:
    # counted again from it when the campaign completes).
    devices_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    devices_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CampaignId(Base):
    """SQLite's memory of the largest campaign id ever given (AUTOINCREMENT), so that a deleted
    campaign's id is never given again; rows live only inside the transaction that creates a
    campaign. Unused on PostgreSQL, whose sequence never reuses an id."""

    __tablename__ = "campaign_ids"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)


class CampaignUser(Base):
    """A user of a campaign; the primary key keeps one row per (campaign, user).

    No foreign key to ``campaigns``: its per-row check costs about a third of a bulk insert of
    users; deleting a campaign deletes its users in the same transaction instead.
    """

    __tablename__ = "campaign_users"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)


class CampaignPage(Base):
    """A page of a live send: the users ``after < user_id <= upto``; done once all are final."""

    __tablename__ = "campaign_pages"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    upto: Mapped[str] = mapped_column(String(255), primary_key=True)
    after: Mapped[str | None] = mapped_column(String(255))
    devices: Mapped[int] = mapped_column(Integer)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
