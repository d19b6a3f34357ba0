"""The domain services of one running clarion, built once from the Settings."""

from __future__ import annotations

from dataclasses import dataclass

from clarion.config import Settings
from clarion.core.apps import Applications
from clarion.core.campaigns import Campaigns
from clarion.core.devices import Devices
from clarion.core.directory import ActivationDirectory, LocalDirectory, PowerAuthDirectory
from clarion.core.fanout import JOB_KIND as CAMPAIGN_JOB_KIND
from clarion.core.fanout import FanOut
from clarion.core.messages import JOB_KIND, Messages
from clarion.core.secretbox import SecretBox, secret_box_for
from clarion.core.sender import Sender
from clarion.core.worker import Worker, worker_identity
from clarion.errors import ClarionError
from clarion.store.db import Database
from clarion.store.jobs import JobQueue


@dataclass
class Services:
    settings: Settings
    db: Database
    box: SecretBox
    directory: ActivationDirectory
    apps: Applications
    devices: Devices
    sender: Sender
    messages: Messages
    campaigns: Campaigns
    fanout: FanOut

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


async def open_services(settings: Settings, *, migrate: bool | None = None) -> Services:
    """Connect to the database (migrating or checking its schema) and build the services."""
    key = settings.secret_key.get_secret_value() if settings.secret_key else None
    box = secret_box_for(key, settings.resolved_key_file())
    db = Database(settings.database_url)
    try:
        if settings.should_auto_migrate if migrate is None else migrate:
            await db.upgrade()
        else:
            await db.check_schema()
        directory = directory_for(settings, db)
    except BaseException:
        await db.dispose()
        raise
    apps = Applications(db, box, apns_use_development=settings.apns_use_development)
    sender = Sender(db, apps, settings)
    messages = Messages(db, sender, store_messages=settings.store_messages)
    return Services(
        settings=settings,
        db=db,
        box=box,
        directory=directory,
        apps=apps,
        devices=Devices(db, directory, multiple_activations=settings.multiple_activations),
        sender=sender,
        messages=messages,
        campaigns=Campaigns(db, messages),
        fanout=FanOut(db, sender, page_size=settings.campaign_batch_size, wake=messages.wake),
    )
