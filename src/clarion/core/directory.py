"""The activation directory: who owns an activation, and is it active.

``local`` keeps the activation table in clarion's own database (the embedded default);
``powerauth`` asks a PowerAuth Server over REST and caches the answer briefly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.platforms import ActivationStatus
from clarion.errors import DirectoryError
from clarion.store.db import Database, insert_for
from clarion.store.models import Activation, utcnow


@dataclass(frozen=True, slots=True)
class ActivationInfo:
    status: ActivationStatus
    user_id: str | None


class ActivationDirectory(Protocol):
    """Looks activations up; None means the directory does not know the activation."""

    is_local: bool

    async def status(self, activation_id: str) -> ActivationInfo | None: ...

    async def close(self) -> None: ...


class LocalDirectory:
    """Activations kept by clarion itself, filled through the API and the CLI."""

    is_local = True

    def __init__(self, db: Database) -> None:
        self._db = db

    async def status(self, activation_id: str) -> ActivationInfo | None:
        async with self._db.reader() as session:
            return await self.lookup(session, activation_id)

    @staticmethod
    async def lookup(session: AsyncSession, activation_id: str) -> ActivationInfo | None:
        row = await session.get(Activation, activation_id)
        if row is None:
            return None
        return ActivationInfo(ActivationStatus(row.status), row.user_id)

    @staticmethod
    async def record(
        session: AsyncSession,
        activation_id: str,
        *,
        user_id: str | None,
        status: ActivationStatus | None,
    ) -> None:
        """Insert or update an activation in the caller's unit of work (atomic upsert).

        ``status`` None keeps a known activation's status (a new one is ACTIVE): a device
        registered again with only its user must not bring a BLOCKED or REMOVED activation back.
        """
        values = {
            "activation_id": activation_id,
            "user_id": user_id,
            "status": (status or ActivationStatus.ACTIVE).value,
            "updated_at": utcnow(),
        }
        update: dict[str, object] = {"updated_at": values["updated_at"]}
        if status is not None:
            update["status"] = status.value
        if user_id is not None:
            update["user_id"] = user_id
        statement = insert_for(session.get_bind().dialect.name)(Activation).values(**values)
        await session.execute(
            statement.on_conflict_do_update(index_elements=["activation_id"], set_=update)
        )

    async def close(self) -> None:
        return None


class PowerAuthDirectory:
    """A PowerAuth Server's ``/rest/v3/activation/status``, with a short in-memory cache."""

    is_local = False
    _MAX_CACHED = 10_000

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        cache_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), auth=auth, timeout=timeout, transport=transport
        )
        self._ttl = cache_seconds
        self._cache: OrderedDict[str, tuple[float, ActivationInfo | None]] = OrderedDict()

    async def status(self, activation_id: str) -> ActivationInfo | None:
        now = time.monotonic()
        cached = self._cache.get(activation_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        info = await self._fetch(activation_id)
        if self._ttl > 0:
            self._cache[activation_id] = (now + self._ttl, info)
            self._cache.move_to_end(activation_id)
            while len(self._cache) > self._MAX_CACHED:
                self._cache.popitem(last=False)
        return info

    def forget(self, activation_id: str) -> None:
        self._cache.pop(activation_id, None)

    async def _fetch(self, activation_id: str) -> ActivationInfo | None:
        body = {"requestObject": {"activationId": activation_id}}
        try:
            response = await self._client.post("/rest/v3/activation/status", json=body)
        except httpx.HTTPError as exc:
            raise DirectoryError(f"PowerAuth Server is unreachable: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise DirectoryError("PowerAuth Server refused clarion's credentials.")
        if response.status_code >= 500:
            raise DirectoryError(f"PowerAuth Server answered HTTP {response.status_code}.")
        try:
            payload = response.json()
        except ValueError:
            raise DirectoryError(
                "PowerAuth Server answered with a body that is not JSON."
            ) from None
        result = payload.get("responseObject") if isinstance(payload, dict) else None
        if response.status_code != 200 or not isinstance(result, dict):
            return None
        raw_status = result.get("activationStatus")
        if raw_status is None:
            return None
        try:
            status = ActivationStatus(str(raw_status).upper())
        except ValueError:
            raise DirectoryError(
                f"PowerAuth Server sent an unknown activation status: {str(raw_status)[:40]}"
            ) from None
        user = result.get("userId")
        return ActivationInfo(status, str(user) if user is not None else None)

    async def close(self) -> None:
        await self._client.aclose()
