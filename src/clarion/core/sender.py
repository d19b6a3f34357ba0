"""From devices to provider calls: targets, pool keys, credential versions, feedback.

The delivery core (``clarion.delivery``) knows nothing of the database; this module gives it a
provider factory that reads the stored credentials, the credentials version of every send, and
applies what comes back (dead tokens, rejected credentials) to the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, bindparam, column, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.config import Settings
from clarion.core.apps import Applications
from clarion.core.platforms import Platform
from clarion.core.together import Together
from clarion.delivery import (
    CredentialsRejected,
    CredentialsUnusable,
    Dispatcher,
    PoolKey,
    ProviderPool,
    RetryPolicy,
)
from clarion.providers.apns import ApnsProvider
from clarion.providers.base import (
    ApnsCredentials,
    FcmCredentials,
    HmsCredentials,
    Notification,
    Outcome,
    OutcomeKind,
    Provider,
)
from clarion.providers.fcm import FcmProvider
from clarion.providers.hms import HmsProvider
from clarion.providers.transport import create_transport
from clarion.store.db import Database
from clarion.store.models import Application, Credential, Device

log = logging.getLogger(__name__)

Versions = dict[str, tuple[int, str | None]]  # platform -> (credentials version, environment)

# Built once: a synchronous send runs it on every request.
_TARGET_COLUMNS = (
    Device.id,
    Device.platform,
    Device.environment,
    Device.token,
    Device.activation_id,
    Device.active,
    Device.user_id,
)
_LOOKUP = (
    select(
        Application.id.label("app_pk"),
        *_TARGET_COLUMNS,
        Credential.version,
        Credential.environment.label("app_environment"),
    )
    .select_from(Application)
    .outerjoin(
        Device,
        and_(
            Device.application_id == Application.id,
            Device.user_id.in_(bindparam("users", expanding=True)),
        ),
    )
    .outerjoin(
        Credential,
        and_(Credential.application_id == Application.id, Credential.platform == Device.platform),
    )
    .where(Application.app_id == bindparam("app_id"))
)

_UNOWNED = select(*_TARGET_COLUMNS).where(
    Device.application_id == bindparam("app_pk"),
    Device.activation_id.in_(bindparam("activations", expanding=True)),
    Device.user_id.is_(None),
)

_DEVICES_OF = select(*_TARGET_COLUMNS).where(
    Device.application_id == bindparam("app_pk"),
    Device.user_id.in_(bindparam("users", expanding=True)),
)

# PostgreSQL: the same two reads, each user's devices found by their own lookup of the
# (user_id, application_id) index whatever the table's statistics say. With an IN list, a
# devices table without statistics (autovacuum off, or the minute after a bulk import) was
# planned as a scan of every device of the application, filtered by the list: 4.7 and 6.5 ms
# against 2.8 and 3.5 ms for 500 users at 20,000 devices (and 277 ms a lookup, as a generic
# plan, in a server's statement log during a benchmark). ``OFFSET 0`` keeps each user's
# subquery from being merged into a join that the planner would again cost from the missing
# statistics. One array parameter, so the SQL is the same for any number of users. The users
# must be distinct (each is looked up once).
_TARGET_KEYS = tuple(c.key for c in _TARGET_COLUMNS)
_PG_USER_DEVICES = (
    "unnest(CAST(:users AS text[])) AS u(user_id) CROSS JOIN LATERAL (SELECT "  # noqa: S608
    + ", ".join(f"dv.{key}" for key in _TARGET_KEYS)
    + " FROM devices AS dv"
    " WHERE dv.application_id = {app} AND dv.user_id = u.user_id OFFSET 0) AS d"
)
_PG_LOOKUP = text(
    "SELECT a.id AS app_pk, "  # noqa: S608 - constant SQL; every value is a bound parameter
    + ", ".join(f"d.{key}" for key in _TARGET_KEYS)
    + ", c.version, c.environment AS app_environment"
    " FROM applications AS a LEFT JOIN LATERAL (SELECT d.* FROM "
    + _PG_USER_DEVICES.format(app="a.id")
    + ") AS d ON true"
    " LEFT JOIN credentials AS c ON c.application_id = a.id AND c.platform = d.platform"
    " WHERE a.app_id = :app_id"
).columns(
    *(column(name) for name in ("app_pk", *_TARGET_KEYS, "version")), column("app_environment")
)
PG_DEVICES_OF = text(
    "SELECT d.* FROM "  # noqa: S608 - constant SQL; every value is a bound parameter
    + _PG_USER_DEVICES.format(app=":app_pk")
).columns(*(column(name) for name in _TARGET_KEYS))
# For the campaign fan-out: how many registrations these (distinct) users have in the app.
PG_COUNT_DEVICES_OF = text(
    "SELECT count(*) FROM "  # noqa: S608 - constant SQL; every value is a bound parameter
    + _PG_USER_DEVICES.format(app=":app_pk")
)

_VERSIONS = (
    select(Credential.platform, Credential.version, Credential.environment)
    .join(Application, Application.id == Credential.application_id)
    .where(Application.app_id == bindparam("app_id"))
)
_VERSIONS_OF = select(Credential.platform, Credential.version, Credential.environment).where(
    Credential.application_id == bindparam("app_pk")
)

NO_CREDENTIALS = "NoCredentials"
LOOKUP_USERS = 1000  # users in one lookup query at most


@dataclass(frozen=True, slots=True)
class Target:
    """One device a notification goes to."""

    device_id: int
    platform: str
    environment: str | None
    token: str
    activation_id: str | None
    active: bool


class Sender:
    """Sends to targets through the dispatcher, one pool key per (app, platform, environment)."""

    def __init__(self, db: Database, apps: Applications, settings: Settings) -> None:
        self._db = db
        self._postgresql = db.dialect == "postgresql"
        self._apps = apps
        self._settings = settings
        self._default_env = "development" if settings.apns_use_development else "production"
        self.dispatcher = Dispatcher(
            ProviderPool(self._build, max_in_flight=settings.provider_max_in_flight),
            policy=RetryPolicy(
                max_attempts=settings.delivery_max_attempts,
                backoff_base=settings.delivery_backoff_base,
                backoff_cap=settings.delivery_backoff_cap,
            ),
            on_credentials_rejected=self._rejected,
        )
        self._together: Together[
            tuple[str, tuple[tuple[str, tuple[int, str | None]], ...]],
            tuple[Notification, Sequence[Target]],
            list[Outcome],
        ] = Together(self._send_together)
        self._lookups: Together[str, str, tuple[int | None, list[Target], Versions]] = Together(
            self._lookup_together
        )

    async def close(self) -> None:
        await self._lookups.drain()
        await self._together.drain()
        await self.dispatcher.close()

    async def lookup(
        self, app_id: str, users: Sequence[str]
    ) -> tuple[int | None, dict[str, list[Target]], Versions]:
        """In one prepared query (at most 1,000 users): the app's row id (None if it does not
        exist), these users' registrations in it, and their platforms' credentials versions."""
        users = list(dict.fromkeys(users))
        # One user (a synchronous send's usual case) is an equality the planner always takes
        # to the index; the array form costs a little more there.
        statement = _PG_LOOKUP if self._postgresql and len(users) > 1 else _LOOKUP
        rows = await self._db.read(statement, {"app_id": app_id, "users": users})
        if not rows:
            return None, {}, {}
        found: dict[str, list[Target]] = defaultdict(list)
        versions: Versions = {}
        for row in rows:
            if row.id is None:
                continue  # the app exists, these users have no registration in it
            found[row.user_id].append(
                Target(
                    row.id, row.platform, row.environment, row.token, row.activation_id, row.active
                )
            )
            if row.version is not None:
                versions[row.platform] = (row.version, row.app_environment)
        return rows[0].app_pk, found, versions

    async def lookup_together(
        self, app_id: str, users: Sequence[str]
    ) -> tuple[int | None, dict[str, list[Target]], Versions]:
        """``lookup``, joined with the other callers' of this turn of the event loop for the
        same app: one query for all of them (see ``clarion.core.together``). The versions may
        name more platforms than these users' devices have (the others' devices)."""
        unique = list(dict.fromkeys(users))
        if not unique:
            return await self.lookup(app_id, unique)
        answers = await self._lookups.submit(app_id, unique)
        app_pk: int | None = None
        versions: Versions = {}
        found: dict[str, list[Target]] = {}
        for user, (pk, targets, known) in zip(unique, answers, strict=True):
            app_pk, versions = pk, known
            if targets:
                found[user] = targets
        return app_pk, found, versions

    async def _lookup_together(
        self, app_id: str, users: list[str]
    ) -> list[tuple[int | None, list[Target], Versions]]:
        unique = list(dict.fromkeys(users))
        app_pk: int | None = None
        found: dict[str, list[Target]] = {}
        versions: Versions = {}
        for i in range(0, len(unique), LOOKUP_USERS):
            app_pk, part, known = await self.lookup(app_id, unique[i : i + LOOKUP_USERS])
            found.update(part)
            versions.update(known)
            if app_pk is None:
                break  # no such app
        return [(app_pk, found.get(user, []), versions) for user in users]

    async def devices_of(self, app_pk: int, users: Iterable[str]) -> dict[str, list[Target]]:
        """The registrations of these users in the app, by user."""
        found: dict[str, list[Target]] = defaultdict(list)
        users = list(dict.fromkeys(users))
        statement = PG_DEVICES_OF if self._postgresql else _DEVICES_OF
        for i in range(0, len(users), 1000):
            rows = await self._db.read(statement, {"app_pk": app_pk, "users": users[i : i + 1000]})
            for row in rows:
                found[row.user_id].append(
                    Target(
                        row.id,
                        row.platform,
                        row.environment,
                        row.token,
                        row.activation_id,
                        row.active,
                    )
                )
        return found

    async def unowned(self, app_pk: int, activation_ids: Iterable[str]) -> dict[str, list[Target]]:
        """The app's registrations of these activations that have no user (yet), by activation:
        a message naming the activation reaches them (see ``messages.add_unowned``)."""
        found: dict[str, list[Target]] = defaultdict(list)
        rows = await self._db.read(
            _UNOWNED, {"app_pk": app_pk, "activations": list(dict.fromkeys(activation_ids))}
        )
        for row in rows:
            found[row.activation_id].append(
                Target(
                    row.id, row.platform, row.environment, row.token, row.activation_id, row.active
                )
            )
        return found

    async def send_once(
        self,
        app_id: str,
        notification: Notification,
        targets: Sequence[Target],
        *,
        attempt: int = 1,
        versions: Versions | None = None,
        wait: bool = False,
    ) -> list[Outcome]:
        """One attempt to every target; one outcome per target, in order.

        ``versions`` (from ``versions()``) saves a query when the caller sends many at once.
        A key backing off after a Retry-After answers RETRY at once unless ``wait``: callers
        record the retry time (a job, the ledger) or pass it on (a relay push), never block.
        """
        if not targets:
            return []
        [outcomes] = await self.send_many(
            app_id, ((notification, targets),), attempt=attempt, versions=versions, wait=wait
        )
        return outcomes

    async def send_many(
        self,
        app_id: str,
        items: Sequence[tuple[Notification, Sequence[Target]]],
        *,
        attempt: int = 1,
        versions: Versions | None = None,
        wait: bool = False,
    ) -> list[list[Outcome]]:
        """``send_once`` for several notifications of one app, each to its own targets: one
        dispatcher call per pool key for all of them. One list of outcomes per item."""
        known = versions if versions is not None else await self.versions(app_id)
        outcomes: list[list[Outcome | None]] = [[None] * len(targets) for _, targets in items]
        keys: dict[tuple[str, str | None], PoolKey] = {}
        # Per pool key, the parts to send: (item, its notification, the positions of its targets)
        groups: dict[PoolKey, list[tuple[int, Notification, list[int]]]] = defaultdict(list)
        for item, (notification, targets) in enumerate(items):
            by_key: dict[PoolKey, list[int]] = {}
            for index, target in enumerate(targets):
                platform = target.platform
                if platform not in known:
                    outcomes[item][index] = Outcome(
                        target.token, OutcomeKind.FAILED, NO_CREDENTIALS
                    )
                    continue
                key = keys.get((platform, target.environment))
                if key is None:
                    env = "production"
                    if platform == Platform.APNS:
                        env = target.environment or known[platform][1] or self._default_env
                    key = keys[(platform, target.environment)] = PoolKey(app_id, platform, env)
                by_key.setdefault(key, []).append(index)
            for key, indices in by_key.items():
                groups[key].append((item, notification, indices))

        async def send(key: PoolKey, parts: list[tuple[int, Notification, list[int]]]) -> None:
            results = await self.dispatcher.send_many(
                key,
                known[key.platform][0],
                [(n, [items[item][1][i].token for i in indices]) for item, n, indices in parts],
                attempt=attempt,
                wait=wait,
            )
            answers = iter(results)
            for item, _, indices in parts:
                for i in indices:
                    outcomes[item][i] = next(answers)

        if len(groups) == 1:
            [(key, parts)] = groups.items()
            await send(key, parts)
        elif groups:
            await asyncio.gather(*(send(key, parts) for key, parts in groups.items()))
        return [[o for o in item if o is not None] for item in outcomes]

    async def send_together(
        self,
        app_id: str,
        items: Sequence[tuple[Notification, Sequence[Target]]],
        *,
        versions: Versions,
    ) -> list[list[Outcome]]:
        """``send_many`` (one attempt, no waiting at a backing-off key), joined with the other
        callers' of this turn of the event loop for the same app and credentials versions:
        one dispatcher call for all of them (see ``clarion.core.together``)."""
        return await self._together.submit((app_id, tuple(sorted(versions.items()))), items)

    async def _send_together(
        self,
        key: tuple[str, tuple[tuple[str, tuple[int, str | None]], ...]],
        items: list[tuple[Notification, Sequence[Target]]],
    ) -> list[list[Outcome]]:
        app_id, versions = key
        return await self.send_many(app_id, items, versions=dict(versions))

    async def forget_devices(self, dead: Sequence[tuple[int, Outcome]]) -> None:
        """Remove registrations whose token the provider declared dead (see ``forget_dead``)."""
        async with self._db.transaction() as session:
            await forget_dead(session, dead)

    async def versions(self, app_id: str) -> Versions:
        """Credentials version and APNs environment of each configured platform of the app."""
        rows = await self._db.read(_VERSIONS, {"app_id": app_id})
        return {r.platform: (r.version, r.environment) for r in rows}

    async def versions_of(self, app_pk: int) -> Versions:
        """``versions`` by the application's row id."""
        rows = await self._db.read(_VERSIONS_OF, {"app_pk": app_pk})
        return {r.platform: (r.version, r.environment) for r in rows}

    async def _build(self, key: PoolKey) -> Provider:
        """The provider factory of the pool: stored credentials to a live provider."""
        found = await self._apps.credentials(key.application, Platform(key.platform))
        if found is None:
            raise CredentialsUnusable(f"no {key.platform} credentials for {key.application}")
        try:
            return build_provider(found[0], key.environment, self._settings)
        except ValueError as exc:
            raise CredentialsUnusable(str(exc)) from None

    async def _rejected(self, event: CredentialsRejected) -> None:
        reason = (event.reason or "rejected")[:500]
        log.warning(
            "credentials rejected: sends to %s stop until they change",
            event.key,
            extra={"reason": reason, "status": event.status},
        )
        async with self._db.transaction() as session:
            app = select(Application.id).where(Application.app_id == event.key.application)
            await session.execute(
                update(Credential)
                .where(
                    and_(
                        Credential.application_id == app.scalar_subquery(),
                        Credential.platform == event.key.platform,
                        Credential.version == event.version,
                    )
                )
                .values(rejected_reason=reason)
            )


def build_provider(
    creds: ApnsCredentials | FcmCredentials | HmsCredentials, environment: str, settings: Settings
) -> Provider:
    """A live provider for one pool key, with its own pooled transport."""
    ca_file, timeout = settings.provider_ca_file, settings.provider_timeout
    if isinstance(creds, ApnsCredentials):
        sandbox = environment == "development"
        creds = dataclasses.replace(creds, sandbox=sandbox)
        transport = create_transport(
            ca_file=ca_file,
            client_cert_pem=creds.certificate_pem,
            timeout=timeout,
            max_connections=settings.provider_max_in_flight,
            http2_only=True,
        )
        base = settings.apns_sandbox_url if sandbox else settings.apns_production_url
        return ApnsProvider(creds, transport, base_url=base, owns_transport=True)
    if isinstance(creds, FcmCredentials):
        return FcmProvider(
            creds,
            create_transport(ca_file=ca_file, timeout=timeout),
            token_transport=create_transport(ca_file=ca_file, timeout=timeout),
            base_url=settings.fcm_base_url,
            token_url=settings.fcm_token_url,
            timeout=timeout,
            concurrency=settings.fcm_concurrency,
        )
    return HmsProvider(
        creds,
        create_transport(ca_file=ca_file, timeout=timeout),
        token_transport=create_transport(ca_file=ca_file, timeout=timeout),
        base_url=settings.hms_push_url,
        token_url=settings.hms_token_url,
        timeout=timeout,
        concurrency=settings.hms_concurrency,
    )


def log_failures(pushes: Iterable[tuple[str, str, Outcome]]) -> None:
    """Say why pushes ended undelivered, one line per (app, platform, reason): an answer or a
    ledger row has no room for the provider's reasons, and an operator needs them. ``pushes``:
    (app id, platform, outcome); retries still to come and deliveries are left out. A failure
    is a warning, a dead token (the app was uninstalled) information."""
    tally: Counter[tuple[str, str, OutcomeKind, str]] = Counter(
        (app_id, platform, outcome.kind, outcome.reason or outcome.kind.value)
        for app_id, platform, outcome in pushes
        if outcome.kind is OutcomeKind.FAILED or outcome.kind is OutcomeKind.TOKEN_DEAD
    )
    for (app_id, platform, kind, reason), count in tally.items():
        log.log(
            logging.WARNING if kind is OutcomeKind.FAILED else logging.INFO,
            "%d %s push%s %s: %s",
            count,
            platform,
            "" if count == 1 else "es",
            "failed" if kind is OutcomeKind.FAILED else "to a dead token",
            reason,
            extra={"app": app_id},
        )


async def forget_dead(session: AsyncSession, dead: Iterable[tuple[int, Outcome]]) -> None:
    """Remove the registrations (device ids) whose token came back TOKEN_DEAD.

    With the provider's ``invalid_since`` (APNs 410 ``timestamp``), only a registration made
    before that time goes: the app may have registered the same token again since, which
    revives it (Apple's rule).
    """
    plain: list[int] = []
    for device_id, outcome in dead:
        if outcome.invalid_since is None:
            plain.append(device_id)
            continue
        since = datetime.fromtimestamp(outcome.invalid_since, UTC)
        await session.execute(
            delete(Device).where(Device.id == device_id, Device.registered_at < since)
        )
    if plain:
        await session.execute(delete(Device).where(Device.id.in_(plain)))
