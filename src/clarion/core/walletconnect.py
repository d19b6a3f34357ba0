"""WalletConnect clients and their pushes: registration rules, dedup, flags and blob, outcomes.

A tenant is an application; a client is a device registration carrying the relay's
``client_id``. Delivery goes through a ``PushSender`` (the shared delivery core in production),
which this module hands a provider-neutral ``Notification`` and whose single ``Outcome`` it acts
on: a dead token deletes the client, rejected credentials suspend the tenant.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion import jsontext
from clarion.core.sender import Sender, Target
from clarion.core.tenants import InvalidField, Tenants
from clarion.core.together import OneAtATime
from clarion.core.wcclaims import Claims
from clarion.errors import ClarionError
from clarion.providers.apns import is_device_token
from clarion.providers.base import Notification, Outcome, OutcomeKind
from clarion.providers.noop import NoopProvider
from clarion.providers.transport import TRANSPORT_PREFIX
from clarion.store.db import Database, insert_for
from clarion.store.models import (
    Device,
    WcMessage,
    utcnow,
)

log = logging.getLogger("clarion.walletconnect")

UNREACHABLE = "The push service could not be reached."

T = TypeVar("T")
FLAG_ENCRYPTED = 1
_ATTEMPTS = 5  # a registration or push racing another one is retried this many times
_LOCK_SPACE = 0x5743  # "WC": the first key of clarion's WalletConnect advisory locks
# What a registration sets on the client's row (besides the tenant and the client id).
_REGISTERED = ("platform", "environment", "token", "always_raw", "active", "registered_at")


class PushType(enum.StrEnum):
    """The push types a client registers with (stored as platform + environment)."""

    APNS = "apns"
    APNS_SANDBOX = "apns-sandbox"
    FCM = "fcm"
    FCM_V1 = "fcm_v1"
    NOOP = "noop"

    @property
    def platform(self) -> str:
        """The provider platform: ``fcm`` clients are delivered through FCM HTTP v1."""
        if self in (PushType.APNS, PushType.APNS_SANDBOX):
            return "apns"
        if self in (PushType.FCM, PushType.FCM_V1):
            return "fcm"
        return "noop"

    @property
    def environment(self) -> str | None:
        if self is PushType.APNS_SANDBOX:
            return "development"
        return "production" if self is PushType.APNS else None


_TYPE_ALIASES = {t.value: t for t in PushType} | {"apns_sandbox": PushType.APNS_SANDBOX}


class ProviderNotAvailable(InvalidField):
    def __init__(self, message: str) -> None:
        super().__init__("type", message, name="provider_not_available")


def parse_push_type(value: str) -> PushType:
    found = _TYPE_ALIASES.get(value.strip().lower())
    if found is None:
        raise ProviderNotAvailable(
            f"Unknown push type {value[:40]!r}: use apns, apns-sandbox, fcm, fcm_v1 or noop."
        )
    return found


def normalise_client_id(client_id: str) -> str:
    """The relay's pairing id, without a leading ``did:key:``."""
    stripped = client_id.removeprefix("did:key:")
    if not stripped.strip():
        raise InvalidField("client_id", "client_id must not be empty.")
    if "/" in stripped:  # it could never be pushed to or removed: it is a path segment
        raise InvalidField("client_id", "client_id must not contain '/'.")
    return stripped


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client, as the sender needs it."""

    tenant_id: str
    client_id: str
    push_type: PushType
    token: str
    always_raw: bool
    device_id: int = 0
    credentials: tuple[int, str | None] | None = None  # (version, APNs environment) if any


@dataclass(frozen=True, slots=True)
class Registration:
    tenant_id: str
    client_id: str
    push_type: PushType
    token: str
    always_raw: bool = False


@dataclass(frozen=True, slots=True)
class Payload:
    """``{topic, flags, blob}``, the seed's form."""

    topic: str
    flags: int
    blob: str


@dataclass(frozen=True, slots=True)
class RawPayload:
    """``{topic, tag, message}``, upstream's raw form, passed through as it is."""

    topic: str
    tag: int
    message: str


@dataclass(frozen=True, slots=True)
class Push:
    tenant_id: str
    client_id: str
    message_id: str
    payload: Payload | RawPayload


def raw_message_id(raw: RawPayload) -> str:
    """The dedup id of a raw push sent without an ``id``: the hash of what it carries."""
    digest = hashlib.sha256(f"{raw.topic}\x00{raw.tag}\x00{raw.message}".encode()).hexdigest()
    return f"raw:{digest}"


class PushStatus(enum.StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    UNKNOWN_CLIENT = "unknown_client"
    CLIENT_DELETED = "client_deleted"
    TENANT_SUSPENDED = "tenant_suspended"
    BAD_BLOB = "json"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PushResult:
    status: PushStatus
    reason: str | None = None
    retry_after: float | None = None


class PushSender(Protocol):
    """Sends one notification to one client through the delivery core."""

    async def send(self, tenant_id: str, client: Client, notification: Notification) -> Outcome:
        """One classified outcome for the client's token."""
        ...


class BadBlob(ClarionError):
    """A cleartext blob that is not base64 of a JSON object with a title and a body."""


def cleartext(blob: str) -> tuple[str, str]:
    """(title, body) of a cleartext blob: base64 of JSON ``{title, body, image?, url?}``."""
    try:
        data = jsontext.loads(base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise BadBlob("The blob of a cleartext message must be base64 of a JSON object.") from None
    if not isinstance(data, dict):
        raise BadBlob("The blob of a cleartext message must be base64 of a JSON object.")
    title, body = data.get("title"), data.get("body")
    if not isinstance(title, str) or not isinstance(body, str):
        raise BadBlob("The cleartext message must have a string title and body.")
    return title, body


def visible_content(payload: Payload | RawPayload) -> tuple[str, str] | None:
    """(title, body) of a cleartext payload; None for an encrypted or raw one (BadBlob if a
    cleartext blob is unusable: unless the client is ``always_raw``, nothing is sent)."""
    if isinstance(payload, RawPayload) or payload.flags & FLAG_ENCRYPTED:
        return None
    return cleartext(payload.blob)


def build_notification(
    payload: Payload | RawPayload, *, always_raw: bool, shown: tuple[str, str] | None = None
) -> Notification:
    """The provider-neutral notification for a WalletConnect payload.

    ``shown`` is the cleartext (title, body) when the caller decoded it already; for a
    cleartext payload without it, the blob is decoded here (BadBlob if unusable).
    """
    if isinstance(payload, RawPayload):
        return Notification(
            topic=payload.topic,
            extras={"tag": payload.tag, "message": payload.message},
            rewritable=True,
        )
    extras = {"flags": payload.flags}
    if always_raw or payload.flags & FLAG_ENCRYPTED:
        # Opaque: the wallet's notification extension decrypts it and rewrites the alert.
        return Notification(topic=payload.topic, blob=payload.blob, extras=extras, rewritable=True)
    title, body = shown or cleartext(payload.blob)
    return Notification(
        title=title, body=body, topic=payload.topic, blob=payload.blob, extras=extras
    )


async def retrying(action: Callable[[], Awaitable[T]], *, unique_keys: bool = True) -> T:
    """Run a unit of work again when it lost a race (a unique key, a SQLite write lock).
    ``unique_keys=False``: a unique key refused is no race (the work holds the locks that
    exclude one), so it is raised at once."""
    for attempt in range(_ATTEMPTS):
        try:
            return await action()
        except (IntegrityError, DBAPIError) as exc:
            if isinstance(exc, IntegrityError):
                racing = unique_keys
            else:
                racing = "locked" in str(exc.orig)
            if not racing or attempt == _ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


class WalletConnect:
    """Register and remove clients, and push to them at most once per message id."""

    def __init__(
        self,
        db: Database,
        tenants: Tenants,
        sender: PushSender,
        *,
        relay_key: Ed25519PublicKey | None = None,
    ) -> None:
        self._db = db
        self._tenants = tenants
        self._claims = Claims(db)
        self._analyzed = False  # _analyze_once has run
        self._registering: OneAtATime[str, tuple[str, dict[str, Any]], Exception | None] = (
            OneAtATime(self._register_batch)
        )
        self.sender = sender
        self.relay_key = relay_key  # set: pushes must carry the relay's signature

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that writes; on SQLite it waits for this process's turn to write."""
        async with self._claims.sqlite_writer(), self._db.transaction() as session:
            yield session

    async def register(self, reg: Registration) -> None:
        """Upsert the client: a new token replaces its old one; a token seen under another
        client id moves to this one (whose old message ids are dropped)."""
        client_id = normalise_client_id(reg.client_id)
        if not reg.token.strip():
            raise InvalidField("token", "token must not be empty.")
        if reg.push_type is not PushType.NOOP:
            available = await self._tenants.platforms(reg.tenant_id)
            if reg.push_type.platform not in available:
                raise ProviderNotAvailable(
                    f"Push type {reg.push_type.value} is not configured for this tenant."
                )
        if reg.push_type.platform == "apns" and not is_device_token(reg.token):
            # Accepted, it was deleted by the first push (BadDeviceToken): the wallet
            # believed it was registered.
            raise InvalidField(
                "token", "An APNs device token is hexadecimal digits, an even number of them."
            )

        values = {
            "platform": reg.push_type.platform,
            "environment": reg.push_type.environment,
            "token": reg.token,
            "always_raw": reg.always_raw,
            "active": True,
        }
        failed = await self._registering.submit(reg.tenant_id, (client_id, values))
        if failed is not None:
            raise failed

    async def _register_batch(
        self, tenant_id: str, items: list[tuple[str, dict[str, Any]]]
    ) -> list[Exception | None]:
        """Apply registrations in the order they came, in one transaction (a burst of
        registrations shares its commit and its turn at the tenant's lock). If the batch
        fails, each registration is applied alone, so that one's error stays its own (and
        two clients trading tokens in one batch, which one multi-row upsert cannot order,
        are applied one after the other)."""
        if len(items) > 1:
            try:
                await retrying(lambda: self._upsert(tenant_id, items), unique_keys=False)
            except Exception:  # noqa: S110 - each is tried alone below, with its own error
                pass
            else:
                await self._analyze_once()
                return [None] * len(items)
        results = [await self._register_alone(tenant_id, item) for item in items]
        await self._analyze_once()
        return results

    async def _analyze_once(self) -> None:
        """On PostgreSQL, give a ``devices`` table that was never analyzed its statistics.

        Without any, a push's claim (``wcclaims``) looked its client up, in a run of a few
        thousand clients registered in a burst, through the tenant's token index filtered by
        client id (about 220 rows read per push) rather than the (tenant, client id) unique
        index: both were costed the same. PostgreSQL's CPU per push went up fourfold and
        relay pushes ran 25 % slower. Autovacuum analyzes a table within a minute or so of
        such a burst; where it is off, or in that minute, nothing would. Once analyzed, the
        statistics tell the two indexes apart however the table grows, so this checks once
        per process."""
        if self._analyzed or self._db.dialect != "postgresql":
            return
        self._analyzed = True
        try:
            async with self._db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                never = await conn.scalar(
                    text("SELECT reltuples < 0 FROM pg_class WHERE oid = 'devices'::regclass")
                )
                if never:
                    await conn.execute(text("ANALYZE devices"))
        except DBAPIError as exc:  # not the table's owner, say: a slower plan, not an error
            log.warning("could not analyze the devices table: %s", str(exc.orig)[:200])

    async def _register_alone(
        self, tenant_id: str, item: tuple[str, dict[str, Any]]
    ) -> Exception | None:
        try:
            await retrying(lambda: self._upsert(tenant_id, [item]))
        except Exception as exc:
            return exc
        return None

    async def _upsert(self, tenant_id: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """One unit of work with the same outcome as registering the items one by one: a
        client's last registration is its row, and a token registered by a client is taken
        from every client that held it before (which loses its row and its message ids)."""
        now = utcnow()
        async with self._writing() as session:
            tenant_pk = await self._tenants.pk(session, tenant_id)
            await _serialise(session, tenant_pk)
            tokens = list({values["token"] for _, values in items})
            holders = await session.execute(
                select(Device.client_id, Device.token).where(
                    Device.application_id == tenant_pk,
                    Device.client_id.is_not(None),
                    Device.token.in_(tokens),
                )
            )
            held: dict[str, str] = {str(client): token for client, token in holders}
            removed: set[str] = set()
            final: dict[str, dict[str, Any]] = {}
            for client_id, values in items:
                token = values["token"]
                for other, other_token in list(held.items()):
                    if other_token == token and other != client_id:
                        del held[other]
                        final.pop(other, None)
                        removed.add(other)
                held[client_id] = token
                final[client_id] = values
            if removed:
                await session.execute(
                    delete(Device).where(
                        Device.application_id == tenant_pk, Device.client_id.in_(removed)
                    )
                )
                await session.execute(
                    delete(WcMessage).where(
                        WcMessage.application_id == tenant_pk, WcMessage.client_id.in_(removed)
                    )
                )
            insert = _insert_for(session)
            statement = insert(Device).values(
                [
                    {
                        "application_id": tenant_pk,
                        "client_id": client_id,
                        "registered_at": now,
                        **values,
                    }
                    for client_id, values in final.items()
                ]
            )
            changed = {name: statement.excluded[name] for name in _REGISTERED}
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["application_id", "client_id"], set_=changed
                )
            )

    async def unregister(self, tenant_id: str, client_id: str) -> None:
        """Delete the client; an unknown client is fine (idempotent)."""
        client_id = normalise_client_id(client_id)
        async with self._writing() as session:
            tenant_pk = await self._tenants.pk(session, tenant_id)
            await session.execute(
                delete(Device).where(
                    Device.application_id == tenant_pk, Device.client_id == client_id
                )
            )

    async def push(self, push: Push) -> PushResult:
        """Send the message once: a message id already accepted for the client sends nothing."""
        client_id = push.client_id.removeprefix("did:key:")
        try:
            shown = visible_content(push.payload)
            blob_error = None
        except BadBlob as exc:
            shown, blob_error = None, exc.message
        row = await retrying(
            lambda: self._claims.claim(
                push.tenant_id,
                client_id,
                push.message_id,
                blob_ok=blob_error is None,
            )
        )
        if row is None:
            async with self._writing() as session:
                await self._tenants.pk(session, push.tenant_id)  # an unknown tenant is NotFound
            return PushResult(PushStatus.UNKNOWN_CLIENT)
        if row.rejected_reason is not None:
            return PushResult(PushStatus.TENANT_SUSPENDED, row.rejected_reason)
        if blob_error is not None and not row.always_raw:
            # The id was not claimed for this blob; if it was accepted before, this is a
            # resend of a message already sent: the same answer as any other duplicate.
            if await self._claims.accepted(push.tenant_id, client_id, push.message_id):
                return PushResult(PushStatus.DUPLICATE)
            return PushResult(PushStatus.BAD_BLOB, blob_error)
        if not row.claimed:
            return PushResult(PushStatus.DUPLICATE)
        client = Client(
            tenant_id=push.tenant_id,
            client_id=client_id,
            push_type=_push_type(row.platform, row.environment),
            token=row.token,
            always_raw=row.always_raw,
            device_id=row.device_id,
            credentials=row.credentials,
        )
        notification = build_notification(push.payload, always_raw=row.always_raw, shown=shown)
        outcome = await self.sender.send(push.tenant_id, client, notification)
        return await self._settle(push, client, outcome)

    async def _settle(self, push: Push, client: Client, outcome: Outcome) -> PushResult:
        kind = outcome.kind
        if kind is OutcomeKind.DELIVERED:
            return PushResult(PushStatus.SENT)
        if kind is OutcomeKind.TOKEN_DEAD:
            if not await self._forget_token(push.tenant_id, client, outcome):
                # Registered again after the token went invalid: it stays, this push failed.
                return PushResult(PushStatus.FAILED, outcome.reason)
            log.info("token dead: client deleted", extra={"tenant": push.tenant_id})
            return PushResult(PushStatus.CLIENT_DELETED, outcome.reason)
        if kind is OutcomeKind.CREDENTIALS_REJECTED:
            reason = outcome.reason or "credentials rejected by the provider"
            version = client.credentials[0] if client.credentials else None
            await self._tenants.suspend(
                push.tenant_id, client.push_type.platform, reason, version=version
            )
            return PushResult(PushStatus.TENANT_SUSPENDED, reason)
        if kind is OutcomeKind.RETRY:
            # Release the id so that the relay's retry is sent rather than taken as a duplicate.
            await self._release_id(push, client.client_id)
            shown = outcome.reason
            if shown is not None and shown.startswith(TRANSPORT_PREFIX):
                # The rest names clarion's provider addresses: for the log, not for the relay.
                log.warning("push not sent: %s", shown, extra={"tenant": push.tenant_id})
                shown = UNREACHABLE
            return PushResult(PushStatus.RETRY, shown, outcome.retry_after)
        return PushResult(PushStatus.FAILED, outcome.reason)

    async def _forget_token(self, tenant_id: str, client: Client, outcome: Outcome) -> bool:
        """Delete the client if it still has the dead token (it may have re-registered), and
        with APNs' ``invalid_since``, only if it registered before then. True if deleted."""
        async with self._writing() as session:
            tenant_pk = await self._tenants.pk(session, tenant_id)
            statement = delete(Device).where(
                Device.application_id == tenant_pk,
                Device.client_id == client.client_id,
                Device.token == client.token,
            )
            if outcome.invalid_since is not None:
                since = datetime.fromtimestamp(outcome.invalid_since, UTC)
                statement = statement.where(Device.registered_at < since)
            deleted = await session.execute(statement.returning(Device.id))
            return deleted.first() is not None

    async def _release_id(self, push: Push, client_id: str) -> None:
        async with self._writing() as session:
            tenant_pk = await self._tenants.pk(session, push.tenant_id)
            await session.execute(
                delete(WcMessage).where(
                    WcMessage.application_id == tenant_pk,
                    WcMessage.client_id == client_id,
                    WcMessage.message_id == push.message_id,
                )
            )


def _insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT, with its ON CONFLICT clauses."""
    return insert_for(session.get_bind().dialect.name)


async def _serialise(session: AsyncSession, tenant_pk: int) -> None:
    """On PostgreSQL, queue the tenant's registrations behind one another (a transaction
    advisory lock). A registration touches several rows chosen by two keys (its client id and
    its token), so finer locks can deadlock; registrations are rare next to pushes, which take
    no such lock. SQLite needs none: its first write takes the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_LOCK_SPACE, tenant_pk)))


def _push_type(platform: str, environment: str | None) -> PushType:
    if platform == "apns":
        return PushType.APNS_SANDBOX if environment == "development" else PushType.APNS
    return PushType.FCM_V1 if platform == "fcm" else PushType.NOOP


class DeliverySender:
    """The real sender: ``noop`` clients through the noop provider, the others through the
    shared delivery core (pooled providers, back-pressure gates, metrics), one attempt each:
    a retry-later goes back to the relay as a 503 rather than holding its request."""

    def __init__(self, sender: Sender, noop: NoopProvider) -> None:
        self._sender = sender
        self.noop = noop

    async def send(self, tenant_id: str, client: Client, notification: Notification) -> Outcome:
        if client.push_type is PushType.NOOP:
            [outcome] = await self.noop.send(notification, [client.token])
            return outcome
        platform = client.push_type.platform
        target = Target(
            device_id=client.device_id,
            platform=platform,
            environment=client.push_type.environment,
            token=client.token,
            activation_id=None,
            active=True,
        )
        versions = {platform: client.credentials} if client.credentials else {}
        [[outcome]] = await self._sender.send_together(
            tenant_id, [(notification, [target])], versions=versions
        )
        return outcome
