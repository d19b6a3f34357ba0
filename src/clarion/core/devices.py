"""Device registrations: where a push can go, and whose it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.apps import application_pk
from clarion.core.directory import ActivationDirectory, ActivationInfo, LocalDirectory
from clarion.core.platforms import ActivationStatus, ApnsEnvironment, Platform
from clarion.errors import DirectoryError, InvalidRequest, Refused
from clarion.store.db import Database
from clarion.store.models import Device, utcnow


@dataclass(frozen=True, slots=True)
class Registration:
    """A request to bind a push token to one or more activations."""

    app_id: str
    token: str
    platform: Platform
    activation_ids: Sequence[str]
    environment: ApnsEnvironment | None = None
    user_id: str | None = None  # local directory only (documented extension)
    activation_status: ActivationStatus | None = None  # local directory only


class Devices:
    """Register, remove and (de)activate device registrations."""

    def __init__(
        self, db: Database, directory: ActivationDirectory, *, multiple_activations: bool
    ) -> None:
        self._db = db
        self._directory = directory
        self._multiple = multiple_activations

    async def register(self, reg: Registration) -> None:
        """Create or update the registration of each distinct activation in ``reg``."""
        if reg.environment is not None and reg.platform is not Platform.APNS:
            raise InvalidRequest("Environment applies to the ios (APNs) platform only.")
        activations = list(dict.fromkeys(reg.activation_ids))
        if len(activations) > 1 and not self._multiple:
            raise Refused(
                "Registration of a device to multiple activations is disabled "
                "(set CLARION_MULTIPLE_ACTIVATIONS=true to enable it)."
            )
        async with self._db.transaction() as session:
            app_pk = await application_pk(session, reg.app_id)
            for activation_id in activations:
                info = await self._resolve(session, reg, activation_id)
                await self._upsert(session, app_pk, reg, activation_id, info)

    async def remove(self, app_id: str, token: str) -> int:
        """Remove every registration of ``token`` in the app; absent is fine (idempotent)."""
        async with self._db.transaction() as session:
            app_pk = await application_pk(session, app_id)
            result = await session.execute(
                delete(Device).where(Device.application_id == app_pk, Device.token == token)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def update_status(
        self, activation_id: str, status: ActivationStatus | None
    ) -> ActivationStatus:
        """Set ``active`` on all of the activation's registrations; ask the directory if needed."""
        if status is None:
            info = await self._directory.status(activation_id)
            if info is None:
                raise DirectoryError(f"Activation not found: {activation_id}")
            status = info.status
        async with self._db.transaction() as session:
            if self._directory.is_local:
                await LocalDirectory.record(session, activation_id, user_id=None, status=status)
            await session.execute(
                update(Device)
                .where(Device.activation_id == activation_id)
                .values(active=status is ActivationStatus.ACTIVE)
            )
        return status

    async def _resolve(
        self, session: AsyncSession, reg: Registration, activation_id: str
    ) -> ActivationInfo:
        if self._directory.is_local:
            if reg.user_id is not None or reg.activation_status is not None:
                await LocalDirectory.record(
                    session,
                    activation_id,
                    user_id=reg.user_id,
                    status=reg.activation_status,
                )
            info = await LocalDirectory.lookup(session, activation_id)
            # The local directory may not know the activation yet: the device is still
            # reachable through its activation id, with no user until one is recorded.
            info = info or ActivationInfo(ActivationStatus.ACTIVE, None)
        else:
            found = await self._directory.status(activation_id)
            if found is None:
                raise DirectoryError(f"Activation not found: {activation_id}")
            info = found
        if info.status is ActivationStatus.REMOVED:
            raise Refused(f"Activation is removed: {activation_id}")
        return info

    async def _upsert(
        self,
        session: AsyncSession,
        app_pk: int,
        reg: Registration,
        activation_id: str,
        info: ActivationInfo,
    ) -> None:
        device = await self._find(session, app_pk, reg.token, activation_id)
        if device is None:
            device = Device(application_id=app_pk, token=reg.token)
            session.add(device)
        device.application_id = app_pk
        device.token = reg.token
        device.platform = reg.platform.value
        device.environment = reg.environment.value if reg.environment else None
        device.activation_id = activation_id
        device.user_id = info.user_id
        device.active = info.status is ActivationStatus.ACTIVE
        device.registered_at = utcnow()
        await session.flush()

    async def _find(
        self, session: AsyncSession, app_pk: int, token: str, activation_id: str
    ) -> Device | None:
        by_pair = select(Device).where(Device.activation_id == activation_id, Device.token == token)
        candidates = [by_pair]
        if not self._multiple:
            # One registration per activation: a new token replaces the old one, and a token
            # seen under another activation of the app moves to this one.
            candidates.append(select(Device).where(Device.activation_id == activation_id))
            candidates.append(
                select(Device).where(Device.application_id == app_pk, Device.token == token)
            )
        for query in candidates:
            device = (await session.scalars(query.order_by(Device.id).limit(1))).first()
            if device is not None:
                return device
        return None
