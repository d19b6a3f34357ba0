"""Applications and their provider credentials."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from clarion.core.platforms import ApnsEnvironment, Platform
from clarion.core.secretbox import SecretBox
from clarion.errors import Conflict, InvalidRequest, NotFound
from clarion.providers.base import ApnsCredentials, FcmCredentials, HmsCredentials
from clarion.store.db import Database
from clarion.store.models import Application, Credential, utcnow

APP_ID = re.compile(r"[a-zA-Z0-9_-]{3,255}")  # whole string: fullmatch
# A credentials row's first version is drawn from [1, 2**30]: room for 2**30 changes before
# the 32-bit column is full, and one chance in a billion of meeting a deleted row's version.
_FIRST_VERSIONS = 1 << 30


@dataclass(frozen=True, slots=True)
class AppSummary:
    app_id: str
    ios: bool
    android: bool
    huawei: bool


@dataclass(frozen=True, slots=True)
class AppDetail:
    """Public identifiers only: never a private key or a client secret."""

    summary: AppSummary
    ios_bundle: str | None = None
    ios_key_id: str | None = None
    ios_team_id: str | None = None
    ios_environment: str | None = None
    android_project_id: str | None = None
    huawei_project_id: str | None = None
    huawei_client_id: str | None = None
    # Why the provider rejected each platform's credentials (sends to it are suspended until
    # new ones are uploaded); None while they stand.
    ios_rejected: str | None = None
    android_rejected: str | None = None
    huawei_rejected: str | None = None


ProviderCredentials = ApnsCredentials | FcmCredentials | HmsCredentials


def check_app_id(app_id: str) -> None:
    if not APP_ID.fullmatch(app_id):
        raise InvalidRequest("App ID must be 3 to 255 characters of letters, digits, '-' and '_'.")


async def application_pk(session: AsyncSession, app_id: str) -> int:
    """The row id of an application, or NotFound."""
    pk = await session.scalar(select(Application.id).where(Application.app_id == app_id))
    if pk is None:
        raise NotFound(f"Application not found: {app_id[:255]}")
    return pk


class Applications:
    """Create applications and manage their APNs / FCM / HMS credentials."""

    def __init__(self, db: Database, box: SecretBox, *, apns_use_development: bool) -> None:
        self._db = db
        self._box = box
        self._apns_use_development = apns_use_development

    async def create(self, app_id: str) -> str:
        check_app_id(app_id)
        try:
            async with self._db.transaction() as session:
                if await session.scalar(select(Application.id).where(Application.app_id == app_id)):
                    raise Conflict(f"Application already exists: {app_id}")
                session.add(Application(app_id=app_id, created_at=utcnow()))
        except IntegrityError:
            raise Conflict(f"Application already exists: {app_id}") from None
        return app_id

    async def summaries(self, *, unconfigured_only: bool = False) -> list[AppSummary]:
        async with self._db.reader() as session:
            apps = (await session.execute(select(Application.id, Application.app_id))).all()
            rows = await session.execute(select(Credential.application_id, Credential.platform))
            configured: dict[int, set[str]] = {}
            for application_id, platform in rows:
                configured.setdefault(application_id, set()).add(platform)
        summaries = [_summary(app_id, configured.get(pk, set())) for pk, app_id in apps]
        if unconfigured_only:
            summaries = [s for s in summaries if not (s.ios or s.android or s.huawei)]
        return sorted(summaries, key=lambda s: s.app_id)

    async def detail(
        self, app_id: str, *, ios: bool = True, android: bool = True, huawei: bool = True
    ) -> AppDetail:
        async with self._db.reader() as session:
            pk = await application_pk(session, app_id)
            creds = {
                c.platform: c
                for c in await session.scalars(
                    select(Credential).where(Credential.application_id == pk)
                )
            }
        apns, fcm, hms = (creds.get(p.value) for p in Platform)
        return AppDetail(
            summary=_summary(app_id, set(creds)),
            ios_bundle=apns.bundle if apns and ios else None,
            ios_key_id=apns.key_id if apns and ios else None,
            ios_team_id=apns.team_id if apns and ios else None,
            ios_environment=apns.environment if apns and ios else None,
            android_project_id=fcm.project_id if fcm and android else None,
            huawei_project_id=hms.project_id if hms and huawei else None,
            huawei_client_id=hms.client_id if hms and huawei else None,
            ios_rejected=apns.rejected_reason if apns and ios else None,
            android_rejected=fcm.rejected_reason if fcm and android else None,
            huawei_rejected=hms.rejected_reason if hms and huawei else None,
        )

    async def set_apns(
        self,
        app_id: str,
        *,
        bundle: str,
        key_id: str,
        team_id: str,
        environment: ApnsEnvironment | None,
        private_key_pem: bytes,
    ) -> None:
        await self._store(
            app_id,
            Platform.APNS,
            secret=private_key_pem,
            bundle=bundle,
            key_id=key_id,
            team_id=team_id,
            environment=environment.value if environment else None,
        )

    async def set_apns_certificate(
        self, app_id: str, *, bundle: str, certificate_pem: bytes
    ) -> None:
        """APNs certificate auth: the certificate and its private key, PEM."""
        await self._store(
            app_id, Platform.APNS, secret=certificate_pem, bundle=bundle, auth="certificate"
        )

    async def set_fcm(
        self, app_id: str, *, project_id: str, service_account: dict[str, Any]
    ) -> None:
        secret = json.dumps(service_account, separators=(",", ":")).encode()
        await self._store(app_id, Platform.FCM, secret=secret, project_id=project_id)

    async def set_hms(
        self, app_id: str, *, project_id: str, client_id: str, client_secret: str
    ) -> None:
        await self._store(
            app_id,
            Platform.HMS,
            secret=client_secret.encode(),
            project_id=project_id,
            client_id=client_id,
        )

    async def remove(self, app_id: str, platform: Platform) -> None:
        async with self._db.transaction() as session:
            pk = await application_pk(session, app_id)
            await session.execute(
                delete(Credential).where(
                    Credential.application_id == pk, Credential.platform == platform.value
                )
            )

    async def credentials(
        self, app_id: str, platform: Platform
    ) -> tuple[ProviderCredentials, int] | None:
        """Decrypted credentials for the delivery core, with their version; None if absent."""
        async with self._db.reader() as session:
            pk = await application_pk(session, app_id)
            row = await session.scalar(
                select(Credential).where(
                    Credential.application_id == pk, Credential.platform == platform.value
                )
            )
        if row is None:
            return None
        secret = self._box.open(row.secret)
        creds: ProviderCredentials
        if platform is Platform.APNS:
            env = row.environment
            sandbox = (env == "development") if env else self._apns_use_development
            creds = ApnsCredentials(
                bundle=row.bundle or "",
                sandbox=sandbox,
                key_id=row.key_id,
                team_id=row.team_id,
                private_key_pem=secret if row.auth == "token" else None,
                certificate_pem=secret if row.auth == "certificate" else None,
            )
        elif platform is Platform.FCM:
            creds = FcmCredentials(
                project_id=row.project_id or "", service_account=json.loads(secret)
            )
        else:
            creds = HmsCredentials(
                project_id=row.project_id or "",
                client_id=row.client_id or "",
                client_secret=secret.decode(),
            )
        return creds, row.version

    async def _store(
        self, app_id: str, platform: Platform, *, secret: bytes, **fields: Any
    ) -> None:
        sealed = self._box.seal(secret)
        for attempt in range(2):
            try:
                async with self._db.transaction() as session:
                    pk = await application_pk(session, app_id)
                    row = await session.scalar(
                        select(Credential)
                        .where(Credential.application_id == pk, Credential.platform == platform)
                        .with_for_update()
                    )
                    if row is None:
                        # Providers are pooled by key and version, and this row may follow one
                        # deleted (by ``remove``, or with its WalletConnect tenant) whose
                        # provider a process still holds: a new row's history starts at a
                        # random version, not at 1, so that it cannot be taken for the old one.
                        first = secrets.randbelow(_FIRST_VERSIONS)
                        row = Credential(application_id=pk, platform=platform.value, version=first)
                        session.add(row)
                    row.auth = fields.get("auth", "token")
                    row.secret = sealed
                    row.version = (row.version or 0) + 1
                    row.rejected_reason = None
                    # Written even when it read None: a rejection of the version this replaces
                    # may have landed since (SQLite takes no row lock), and must not outlive it.
                    flag_modified(row, "rejected_reason")
                    row.updated_at = utcnow()
                    for name in ("project_id", "bundle", "key_id", "team_id", "environment"):
                        setattr(row, name, fields.get(name))
                    row.client_id = fields.get("client_id")
                return
            except IntegrityError:
                if attempt:  # a concurrent upload created the row first; retry as an update
                    raise


def _summary(app_id: str, platforms: set[str]) -> AppSummary:
    return AppSummary(
        app_id=app_id,
        ios=Platform.APNS.value in platforms,
        android=Platform.FCM.value in platforms,
        huawei=Platform.HMS.value in platforms,
    )
