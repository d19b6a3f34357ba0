"""The domain services of one running clarion, built once from the Settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from clarion.config import Settings
from clarion.core.apps import Applications
from clarion.core.campaigns import Campaigns
from clarion.core.devices import Devices
from clarion.core.directory import ActivationDirectory, LocalDirectory, PowerAuthDirectory
from clarion.core.fanout import JOB_KIND as CAMPAIGN_JOB_KIND
from clarion.core.fanout import FanOut
from clarion.core.inbox import Inbox
from clarion.core.messages import JOB_KIND, Messages
from clarion.core.retention import Retention
from clarion.core.secretbox import SecretBox, SecretKeyError, secret_box_for
from clarion.core.sender import Sender
from clarion.core.tenants import Tenants
from clarion.core.walletconnect import DeliverySender, WalletConnect
from clarion.core.wcauth import relay_public_key
from clarion.core.worker import Worker, worker_identity
from clarion.errors import ClarionError, InvalidRequest
from clarion.providers.noop import NoopProvider
from clarion.providers.transport import configure_transport
from clarion.store.db import Database
from clarion.store.jobs import JobQueue
from clarion.store.models import Credential


@dataclass
class Services:
    settings: Settings
    db: Database
    box: SecretBox
    directory: ActivationDirectory
    apps: Applications
    devices: Devices
    tenants: Tenants
    walletconnect: WalletConnect
    sender: Sender
    messages: Messages
    inbox: Inbox
    campaigns: Campaigns
    fanout: FanOut

    @property
    def retention(self) -> Retention:
        """What the workers delete, and after how long."""
        return Retention(
            self.db, self.settings.retention_days, self.settings.wc_message_retention_days
        )

    def worker(self, *, identity: str | None = None) -> Worker:
        """A job worker over this process's services."""
        queue = JobQueue(
            self.db, identity or worker_identity(), lease_seconds=self.settings.worker_lease_seconds
        )
        return Worker(
            queue,
            {JOB_KIND: self.messages.run_job, CAMPAIGN_JOB_KIND: self.fanout.run_job},
            concurrency=self.settings.worker_concurrency,
            poll_interval=self.settings.worker_poll_interval,
            wake=self.messages.wake,
            chores=[self.retention.run],
        )

    async def close(self) -> None:
        await self.sender.close()
        await self.directory.close()
        await self.db.dispose()


def directory_for(settings: Settings, db: Database) -> ActivationDirectory:
    if settings.activation_directory == "local":
        return LocalDirectory(db)
    if not settings.powerauth_url:
        raise ClarionError(
            "CLARION_ACTIVATION_DIRECTORY=powerauth needs CLARION_POWERAUTH_URL to be set"
        )
    password = settings.powerauth_password
    return PowerAuthDirectory(
        settings.powerauth_url,
        username=settings.powerauth_username,
        password=password.get_secret_value() if password else None,
        timeout=settings.powerauth_timeout,
        cache_seconds=settings.powerauth_cache_seconds,
    )


def relay_key_for(settings: Settings) -> Ed25519PublicKey | None:
    """The relay's key when WalletConnect push signatures are to be checked."""
    if not settings.wc_validate_signatures:
        return None
    if not settings.wc_relay_public_key:
        raise ClarionError(
            "CLARION_WC_VALIDATE_SIGNATURES needs CLARION_WC_RELAY_PUBLIC_KEY to be set"
        )
    return relay_public_key(settings.wc_relay_public_key)


async def configure_default_tenant(settings: Settings, tenants: Tenants) -> None:
    """Store the default tenant's credentials given in the settings (upstream's single-tenant
    APNS_* / FCM_* variables); a bad file or key stops the start with the reason."""
    tenant = settings.wc_default_tenant
    try:
        if settings.wc_apns_certificate_file is not None:
            password = settings.wc_apns_certificate_password
            await tenants.set_apns_certificate(
                tenant,
                topic=_required(settings.wc_apns_topic, "CLARION_WC_APNS_TOPIC"),
                p12=settings.wc_apns_certificate_file.read_bytes(),
                password=password.get_secret_value() if password else "",
            )
        elif settings.wc_apns_key_file is not None:
            await tenants.set_apns_token(
                tenant,
                topic=_required(settings.wc_apns_topic, "CLARION_WC_APNS_TOPIC"),
                key_id=_required(settings.wc_apns_key_id, "CLARION_WC_APNS_KEY_ID"),
                team_id=_required(settings.wc_apns_team_id, "CLARION_WC_APNS_TEAM_ID"),
                pem=settings.wc_apns_key_file.read_bytes(),
            )
        else:
            given = [
                name
                for name, value in (
                    ("CLARION_WC_APNS_TOPIC", settings.wc_apns_topic),
                    ("CLARION_WC_APNS_KEY_ID", settings.wc_apns_key_id),
                    ("CLARION_WC_APNS_TEAM_ID", settings.wc_apns_team_id),
                    ("CLARION_WC_APNS_CERTIFICATE_PASSWORD", settings.wc_apns_certificate_password),
                )
                if value
            ]
            if given:
                # Half a configuration would start with no APNs for the default tenant.
                raise ClarionError(
                    f"{given[0]} is set without CLARION_WC_APNS_KEY_FILE or "
                    "CLARION_WC_APNS_CERTIFICATE_FILE: the default tenant's APNs credentials "
                    "need one of them"
                )
        if settings.wc_fcm_credentials_file is not None:
            await tenants.set_fcm(tenant, settings.wc_fcm_credentials_file.read_bytes())
    except OSError as exc:
        raise ClarionError(f"cannot read a WalletConnect credentials file: {exc}") from None
    except InvalidRequest as exc:
        raise ClarionError(f"default tenant credentials refused: {exc.message}") from None


def _required(value: str | None, name: str) -> str:
    if not value:
        raise ClarionError(f"{name} must be set with the default tenant's APNs credentials")
    return value


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def check_secret_key(db: Database, box: SecretBox, *, new_key_file: Path | None) -> None:
    """Refuse to start with a key that does not open the stored credentials: every push to
    their apps would fail, each using up its attempts. ``new_key_file``: a key file generated
    for this start, removed again if the database already held credentials."""
    rows = await db.read(select(Credential.secret).limit(1))
    if not rows:
        return
    try:
        box.open(rows[0].secret)
    except SecretKeyError:
        if new_key_file is not None:
            _remove(new_key_file)
            raise SecretKeyError(
                f"the database holds encrypted provider credentials but their key file "
                f"{new_key_file} is missing: put it back (or set CLARION_SECRET_KEY to the key "
                "they were encrypted with)"
            ) from None
        raise SecretKeyError(
            "CLARION_SECRET_KEY (or the key file) is not the key the stored provider "
            "credentials were encrypted with"
        ) from None


async def open_services(settings: Settings, *, migrate: bool | None = None) -> Services:
    """Connect to the database (migrating or checking its schema) and build the services."""
    relay_key_for(settings)  # a misconfiguration stops the start, before any connection
    configure_transport(settings.transport_threads)
    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    key_file = None if key else settings.resolved_key_file()
    new_key_file = key_file if key_file is not None and not key_file.exists() else None
    box = secret_box_for(key, key_file)
    db = Database.for_settings(settings)
    try:
        if settings.should_auto_migrate if migrate is None else migrate:
            await db.upgrade()
        else:
            await db.check_schema()
        await check_secret_key(db, box, new_key_file=new_key_file)
        directory = directory_for(settings, db)
    except BaseException:
        await db.dispose()
        raise
    apps = Applications(db, box, apns_use_development=settings.apns_use_development)
    tenants = Tenants(
        db,
        apps,
        default_tenant=settings.wc_default_tenant,
        any_token_uri=settings.fcm_token_url is not None,
    )
    try:
        await configure_default_tenant(settings, tenants)
    except BaseException:
        await db.dispose()
        raise
    sender = Sender(db, apps, settings)
    # A job whose pushes were accepted waits out an outage to record them for half its lease:
    # its last heartbeat was at most a third of a lease ago, so the job is still its own.
    record_wait = settings.worker_lease_seconds / 2
    messages = Messages(db, sender, store_messages=settings.store_messages, record_wait=record_wait)
    return Services(
        settings=settings,
        db=db,
        box=box,
        directory=directory,
        apps=apps,
        devices=Devices(db, directory, multiple_activations=settings.multiple_activations),
        tenants=tenants,
        walletconnect=WalletConnect(
            db, tenants, DeliverySender(sender, NoopProvider()), relay_key=relay_key_for(settings)
        ),
        sender=sender,
        messages=messages,
        inbox=Inbox(db),
        campaigns=Campaigns(db, messages),
        fanout=FanOut(
            db,
            sender,
            page_size=settings.campaign_batch_size,
            wake=messages.wake,
            record_wait=record_wait,
        ),
    )
