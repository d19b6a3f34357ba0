"""WalletConnect tenants: applications seen through the WalletConnect dialect.

A tenant is an ``Application`` (its id is the tenant id), its provider credentials are the
application's, and a suspension is the ``rejected_reason`` of the credential a provider
rejected: uploading new credentials for that platform lifts it. The default tenant exists out
of the box: it is created the first time it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core import credentials
from clarion.core.apps import APP_ID, Applications
from clarion.core.platforms import Platform
from clarion.errors import InvalidRequest, NotFound
from clarion.store.db import Database, insert_for
from clarion.store.models import Application, Credential, utcnow

REASON_LENGTH = 512
# A tenant's public facts: one row per credential (one row of NULLs if it has none).
_INFO = (
    select(
        Application.id,
        Credential.platform,
        Credential.bundle,
        Credential.auth,
        Credential.rejected_reason,
    )
    .select_from(Application)
    .outerjoin(Credential, Credential.application_id == Application.id)
    .where(Application.app_id == bindparam("tenant"))
    .order_by(Credential.id)
)


GENERIC_FIELD_ERROR = "invalid_field"
# The token endpoints Google's service account files name.
GOOGLE_TOKEN_URIS = (
    "https://oauth2.googleapis.com/token",
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
)


class InvalidField(InvalidRequest):
    """A user-supplied field is wrong: ``field`` and ``location`` name it, ``name`` is the
    error's name in the dialect's body."""

    def __init__(
        self,
        field: str,
        message: str,
        *,
        location: str = "body",
        name: str = GENERIC_FIELD_ERROR,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.location = location
        self.name = name


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """Public facts only: never a key, a certificate or a service account."""

    tenant_id: str
    platforms: frozenset[str] = field(default_factory=frozenset)
    apns_topic: str | None = None
    apns_type: str | None = None
    suspended_reason: str | None = None


# A tenant's routes are /{tenant_id}/clients...: a tenant named after one of the dialect's own
# top-level paths would have routes that answer as something else (/tenants/clients/...).
RESERVED_TENANT_IDS = frozenset(
    {"health", "clients", "tenants", "rate_limit_test", "metrics", "docs", "redoc"}
)


def check_tenant_id(tenant_id: str, *, location: str = "path") -> None:
    """A well-formed tenant id; in a body (a tenant being created), not a reserved one."""
    field = "tenant_id" if location == "path" else "id"
    if not APP_ID.fullmatch(tenant_id):
        raise InvalidField(
            field,
            "Tenant id must be 3 to 255 characters of letters, digits, '-' and '_'.",
            location=location,
            name="tenant",  # the spec's error name for an unknown or malformed tenant
        )
    if location == "body" and tenant_id.lower() in RESERVED_TENANT_IDS:
        raise InvalidField(
            field,
            f"Tenant id {tenant_id!r} is reserved: it is a path of this API.",
            location=location,
            name="tenant",
        )


def apns_certificate(p12: bytes, password: str) -> bytes:
    """A PKCS#12 APNs certificate that opens with ``password`` and has not expired, as PEM."""
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(p12, password.encode() or None)
    except (ValueError, TypeError):
        raise InvalidField(
            "apns_certificate",
            "The APNs certificate is not PKCS#12, or the password does not open it.",
        ) from None
    if key is None or cert is None:
        raise InvalidField(
            "apns_certificate", "The PKCS#12 file must hold a certificate and its private key."
        )
    if cert.not_valid_after_utc <= datetime.now(UTC):
        raise InvalidField("apns_certificate", "The APNs certificate has expired.")
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Tenants:
    """Create, describe and delete tenants; store and suspend their credentials."""

    def __init__(
        self,
        db: Database,
        apps: Applications,
        *,
        default_tenant: str,
        any_token_uri: bool = False,
    ) -> None:
        self._db = db
        self._apps = apps
        self.default_tenant = default_tenant
        # True when CLARION_FCM_TOKEN_URL replaces every service account's token_uri: then
        # an uploaded document's token_uri is never used, whatever it says.
        self._any_token_uri = any_token_uri

    async def pk(
        self, session: AsyncSession, tenant_id: str, *, create_default: bool = True
    ) -> int:
        """The tenant's row id; the default tenant is created on first use, others NotFound."""
        pk = await session.scalar(select(Application.id).where(Application.app_id == tenant_id))
        if pk is not None:
            return pk
        if not (create_default and tenant_id == self.default_tenant):
            raise NotFound(f"Tenant not found: {tenant_id[:255]}")
        await self._insert(session, tenant_id)
        created = await session.scalar(
            select(Application.id).where(Application.app_id == tenant_id)
        )
        assert created is not None
        return created

    @staticmethod
    async def _insert(session: AsyncSession, tenant_id: str) -> bool:
        insert = insert_for(session.get_bind().dialect.name)
        result = await session.execute(
            insert(Application)
            .values(app_id=tenant_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["app_id"])
        )
        return bool(getattr(result, "rowcount", 0))

    async def create(self, tenant_id: str) -> None:
        """Create the tenant; creating one that exists is fine (idempotent)."""
        check_tenant_id(tenant_id, location="body")
        async with self._db.transaction() as session:
            await self._insert(session, tenant_id)

    async def delete(self, tenant_id: str) -> None:
        """Delete the tenant with its clients, message ids and credentials."""
        async with self._db.transaction() as session:
            pk = await self.pk(session, tenant_id, create_default=False)
            await session.execute(delete(Application).where(Application.id == pk))

    async def info(self, tenant_id: str) -> TenantInfo:
        # A read, not a unit of work: every registration asks (inline on SQLite, on asyncpg
        # directly on PostgreSQL). Only the default tenant's first use writes.
        rows = await self._db.read(_INFO, {"tenant": tenant_id})
        if not rows:
            async with self._db.transaction() as session:
                await self.pk(session, tenant_id)  # creates the default tenant, else NotFound
            rows = await self._db.read(_INFO, {"tenant": tenant_id})
        held = [row for row in rows if row.platform is not None]
        apns = next((c for c in held if c.platform == Platform.APNS.value), None)
        reasons = [c.rejected_reason for c in held if c.rejected_reason]
        return TenantInfo(
            tenant_id=tenant_id,
            platforms=frozenset(c.platform for c in held),
            apns_topic=apns.bundle if apns else None,
            apns_type=apns.auth if apns else None,
            suspended_reason=reasons[0] if reasons else None,
        )

    async def platforms(self, tenant_id: str) -> frozenset[str]:
        """The platforms the tenant has credentials for."""
        return (await self.info(tenant_id)).platforms

    async def set_apns_token(
        self, tenant_id: str, *, topic: str, key_id: str, team_id: str, pem: bytes
    ) -> None:
        topic = _named("apns_topic", credentials.apns_topic, topic)
        key_id = _named("apns_key_id", credentials.apns_key_part, key_id)
        team_id = _named("apns_team_id", credentials.apns_key_part, team_id)
        key = _field_checked("apns_pkcs8_pem", credentials.apns_private_key, pem)
        await self._ensure(tenant_id)
        await self._apps.set_apns(
            tenant_id,
            bundle=topic,
            key_id=key_id,
            team_id=team_id,
            environment=None,  # the client's type (apns or apns-sandbox) decides
            private_key_pem=key,
        )

    async def set_apns_certificate(
        self, tenant_id: str, *, topic: str, p12: bytes, password: str
    ) -> None:
        topic = _named("apns_topic", credentials.apns_topic, topic)
        pem = apns_certificate(p12, password)
        await self._ensure(tenant_id)
        await self._apps.set_apns_certificate(tenant_id, bundle=topic, certificate_pem=pem)

    async def set_fcm(self, tenant_id: str, document: bytes) -> None:
        account = _field_checked("credentials", credentials.fcm_service_account, document)
        if not self._any_token_uri and account["token_uri"] not in GOOGLE_TOKEN_URIS:
            # clarion would POST a signed assertion to it: a tenant must not choose where
            # (an address inside the operator's network, say).
            raise InvalidField(
                "credentials",
                "The service account's token_uri must be Google's OAuth endpoint "
                f"({GOOGLE_TOKEN_URIS[0]}).",
            )
        try:
            project = credentials.project_id(
                str(account["project_id"]), "The service account's project_id"
            )
        except InvalidRequest as exc:
            raise InvalidField("credentials", exc.message) from None
        await self._ensure(tenant_id)
        await self._apps.set_fcm(tenant_id, project_id=project, service_account=account)

    async def remove(self, tenant_id: str, platform: Platform) -> None:
        await self._ensure(tenant_id)
        await self._apps.remove(tenant_id, platform)

    async def suspend(
        self, tenant_id: str, platform: str, reason: str, *, version: int | None = None
    ) -> None:
        """Record that the provider rejected the tenant's credentials for ``platform``: those
        of ``version`` only, when given (credentials uploaded since are not suspended)."""
        async with self._db.transaction() as session:
            pk = await self.pk(session, tenant_id)
            rejected = [Credential.application_id == pk, Credential.platform == platform]
            if version is not None:
                rejected.append(Credential.version == version)
            await session.execute(
                update(Credential).where(*rejected).values(rejected_reason=reason[:REASON_LENGTH])
            )

    async def _ensure(self, tenant_id: str) -> None:
        async with self._db.transaction() as session:
            await self.pk(session, tenant_id)


def _named(name: str, check: Callable[[str, str], str], value: str) -> str:
    """Run an identifier check, naming the form field in its error."""
    try:
        return check(value, name)
    except InvalidRequest as exc:
        raise InvalidField(name, exc.message) from None


def _field_checked(name: str, check: Any, value: bytes) -> Any:
    """Run a credentials validator, naming the form field in its error."""
    try:
        return check(value)
    except InvalidRequest as exc:
        raise InvalidField(name, exc.message) from None
