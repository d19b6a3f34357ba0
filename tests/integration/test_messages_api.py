"""PowerAuth message sending over HTTP, through the real providers to the emulators."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from clarion.core.messages import MessageSpec, SendResult
from clarion.core.services import Services
from clarion.emulators.apns import ApnsEmulator
from clarion.emulators.fcm import FcmEmulator, make_service_account
from clarion.errors import NotFound
from clarion.providers.base import Notification, OutcomeKind
from clarion.store.jobs import queue_depth
from clarion.store.models import Credential, Delivery, Device, Job, PushMessage
from tests.support import assert_error, assert_ok, envelope

BUNDLE = "com.example.app"
IOS_TOKEN = "a1" * 32
IOS_TOKEN_2 = "b2" * 32
ANDROID_TOKEN = "fcm-token-" + "x" * 40


@dataclass
class Emulators:
    apns: ApnsEmulator
    fcm: FcmEmulator
    apns_key: bytes
    account: dict[str, str]


@pytest.fixture
async def emulators() -> AsyncIterator[Emulators]:
    async with ApnsEmulator() as apns, FcmEmulator() as fcm:
        key = apns.create_team_key("TEAM123456", "KEY1234567")
        apns.register_bundle(BUNDLE)
        account = make_service_account("demo-project", token_uri=fcm.token_url)
        fcm.register_service_account(account)
        yield Emulators(apns, fcm, key, account)


def emulator_settings(emulators: Emulators) -> dict[str, Any]:
    """clarion's provider settings pointed at the emulators."""
    return {
        "apns_production_url": emulators.apns.url,
        "apns_sandbox_url": emulators.apns.url,
        "provider_ca_file": emulators.apns.ca_file,
        "fcm_base_url": emulators.fcm.url,
    }


@pytest.fixture
def settings_overrides(emulators: Emulators) -> dict[str, Any]:
    return {
        **emulator_settings(emulators),
        "delivery_backoff_base": 0.01,
        "delivery_backoff_cap": 0.05,
        # 30% injected 429s would exhaust 5 attempts for 0.3^5 of the devices (a flaky test).
        "delivery_max_attempts": 15,
    }


def ios_update(emu: Emulators) -> dict[str, Any]:
    """The app's APNs credentials: the emulator's team key."""
    return envelope(
        appId="mobile-app",
        bundle=BUNDLE,
        keyId="KEY1234567",
        teamId="TEAM123456",
        environment="production",
        privateKeyBase64=base64.b64encode(emu.apns_key).decode(),
    )


async def setup_app(client: httpx.AsyncClient, emu: Emulators) -> None:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))
    assert_ok(await client.put("/admin/app/ios/update", json=ios_update(emu)))
    android = envelope(
        appId="mobile-app",
        projectId="demo-project",
        privateKeyBase64=base64.b64encode(json.dumps(emu.account).encode()).decode(),
    )
    assert_ok(await client.put("/admin/app/android/update", json=android))


async def register(
    client: httpx.AsyncClient,
    token: str,
    activation: str,
    user: str = "alice",
    platform: str = "ios",
    status: str = "ACTIVE",
) -> None:
    body = envelope(
        appId="mobile-app",
        token=token,
        platform=platform,
        activationId=activation,
        userId=user,
        activationStatus=status,
    )
    assert_ok(await client.post("/push/device/create", json=body))


@pytest.fixture
async def app_ready(client: httpx.AsyncClient, emulators: Emulators) -> Emulators:
    await setup_app(client, emulators)
    await register(client, IOS_TOKEN, "act-ios")
    await register(client, ANDROID_TOKEN, "act-android", platform="android")
    return emulators


def message(user: str = "alice", **changes: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "userId": user,
        "body": {"title": "Balance update", "body": "Your balance is now $745.00", "badge": 3},
    }
    msg.update(changes)
    return msg


async def test_sync_send_reaches_every_platform_with_mapped_payloads(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    body = envelope(
        appId="mobile-app",
        message=message(
            body={
                "title": "Balance update",
                "body": "Your balance is now $745.00",
                "badge": 3,
                "sound": "default",
                "category": "balance-update",
                "collapseKey": "balance",
                "extras": {"_comment": "Any custom data.", "n": 1},
            }
        ),
    )
    data = assert_ok(await client.post("/push/message/send", json=body))["responseObject"]
    assert data["mode"] == "SYNCHRONOUS"
    assert data["result"] == {
        "ios": {"sent": 1, "pending": 0, "failed": 0, "total": 1},
        "android": {"sent": 1, "pending": 0, "failed": 0, "total": 1},
        "huawei": {"sent": 0, "pending": 0, "failed": 0, "total": 0},
    }
    [push] = app_ready.apns.delivered()
    assert push.token == IOS_TOKEN
    assert push.headers["apns-topic"] == BUNDLE
    assert push.headers["apns-collapse-id"] == "balance"
    assert push.payload["aps"]["alert"] == {
        "title": "Balance update",
        "body": "Your balance is now $745.00",
    }
    assert push.payload["aps"]["badge"] == 3 and push.payload["_comment"] == "Any custom data."
    [fcm] = app_ready.fcm.messages_to(ANDROID_TOKEN)
    assert fcm["android"]["notification"]["title"] == "Balance update"
    assert fcm["data"] == {"_comment": "Any custom data.", "n": "1"}


async def test_dead_token_is_counted_failed_and_its_device_removed(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    app_ready.apns.unregister_device(IOS_TOKEN)
    body = envelope(appId="mobile-app", message=message())
    result = assert_ok(await client.post("/push/message/send", json=body))["responseObject"][
        "result"
    ]
    assert result["ios"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}
    async with services.db.reader() as session:
        tokens = set((await session.scalars(select(Device.token))).all())
    assert tokens == {ANDROID_TOKEN}


@pytest.mark.parametrize("invalid", ["before", "after"])
async def test_a_registration_newer_than_apples_timestamp_survives_a_410(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators, invalid: str
) -> None:
    # APNs: Unregistered with the time the token was last known invalid. The device registered
    # after that time (the app registered the token again) is kept; one registered before goes.
    async with services.db.reader() as session:
        registered = await session.scalar(
            select(Device.registered_at).where(Device.token == IOS_TOKEN)
        )
    assert registered is not None
    shift = timedelta(hours=-1) if invalid == "before" else timedelta(seconds=1)
    app_ready.apns.unregister_device(IOS_TOKEN, int((registered + shift).timestamp() * 1000))
    body = envelope(appId="mobile-app", message=message())
    result = assert_ok(await client.post("/push/message/send", json=body))["responseObject"]
    assert result["result"]["ios"]["failed"] == 1
    async with services.db.reader() as session:
        tokens = set((await session.scalars(select(Device.token))).all())
    assert (IOS_TOKEN in tokens) == (invalid == "before")


async def test_personal_message_skips_inactive_activations(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN_2, "act-blocked", status="BLOCKED")
    msg = message(attributes={"personal": True, "silent": False})
    result = assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    assert result["responseObject"]["result"]["ios"]["total"] == 1
    assert [p.token for p in app_ready.apns.delivered()] == [IOS_TOKEN]
    # Not personal: the blocked activation's device gets it too.
    await client.post("/push/message/send", json=envelope(appId="mobile-app", message=message()))
    assert {p.token for p in app_ready.apns.delivered()} == {IOS_TOKEN, IOS_TOKEN_2}


async def test_activation_id_targets_one_device(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    msg = message(activationId="act-android")
    result = assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    counts = result["responseObject"]["result"]
    assert counts["ios"]["total"] == 0 and counts["android"]["sent"] == 1
    assert app_ready.apns.delivered() == []


@pytest.mark.parametrize("mode", ["SYNCHRONOUS", "ASYNCHRONOUS"])
async def test_a_device_with_no_user_yet_is_reached_through_its_activation(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators, mode: str
) -> None:
    # Registered before the local directory knew its user (no userId): the spec says a message
    # naming its activationId still reaches it, whatever userId the message gives.
    body = envelope(appId="mobile-app", token=IOS_TOKEN_2, platform="ios", activationId="act-new")
    assert_ok(await client.post("/push/device/create", json=body))
    for msg in (message(activationId="act-new"), message(user="bob", activationId="act-new")):
        result = assert_ok(
            await client.post(
                "/push/message/send", json=envelope(appId="mobile-app", mode=mode, message=msg)
            )
        )
        if mode == "SYNCHRONOUS":
            counts = result["responseObject"]["result"]
            assert counts["ios"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
            assert counts["android"]["total"] == 0
    await run_worker_until_idle(services)
    assert [p.token for p in app_ready.apns.delivered()] == [IOS_TOKEN_2, IOS_TOKEN_2]
    # Without the activation, or naming another one, the user's own devices only.
    msg = message(user="bob")
    result = assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    assert result["responseObject"]["result"]["ios"]["total"] == 0
    # Once a user is recorded for it, only that user's messages reach it.
    await register(client, IOS_TOKEN_2, "act-new", user="carol")
    msg = message(user="bob", activationId="act-new")
    result = assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    assert result["responseObject"]["result"]["ios"]["total"] == 0


async def test_silent_message_is_a_background_push(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    msg = message(attributes={"silent": True}, priority="HIGH")
    assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    [push] = app_ready.apns.delivered()
    assert push.headers["apns-push-type"] == "background"
    assert push.headers["apns-priority"] == "5"
    assert push.payload["aps"] == {"content-available": 1}
    [fcm] = app_ready.fcm.messages_to(ANDROID_TOKEN)
    assert "notification" not in fcm.get("android", {})


async def test_expired_message_is_dropped_not_sent(
    client: httpx.AsyncClient, app_ready: Emulators, caplog: pytest.LogCaptureFixture
) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    msg = message(body={"title": "late", "validUntil": past})
    with caplog.at_level(logging.INFO, logger="clarion.core.sender"):
        result = assert_ok(
            await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
        )
    counts = result["responseObject"]["result"]
    assert counts["ios"]["failed"] == 1 and counts["android"]["failed"] == 1
    assert app_ready.apns.received == [] and app_ready.fcm.received == []
    # The answer has only counts; the log says why, once per platform and reason.
    said = sorted(
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "clarion.core.sender"
    )
    assert said == [
        (logging.WARNING, "1 apns push failed: Expired"),
        (logging.WARNING, "1 fcm push failed: Expired"),
    ]


async def test_a_job_logs_why_its_pushes_failed(
    client: httpx.AsyncClient,
    services: Services,
    app_ready: Emulators,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app_ready.apns.unregister_device(IOS_TOKEN)
    body = {"title": "hi", "extras": {"from": "me"}}  # a data key FCM reserves
    msg = envelope(appId="mobile-app", mode="ASYNCHRONOUS", message=message(body=body))
    assert_ok(await client.post("/push/message/send", json=msg))
    with caplog.at_level(logging.INFO, logger="clarion.core.sender"):
        await run_worker_until_idle(services)
    said = sorted(
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "clarion.core.sender"
    )
    assert said == [
        (logging.INFO, "1 apns push to a dead token: Unregistered"),
        (
            logging.WARNING,
            "1 fcm push failed: INVALID_ARGUMENT: data key 'from' is reserved by FCM",
        ),
    ]
    assert all(IOS_TOKEN not in text and ANDROID_TOKEN not in text for _, text in said)


async def test_user_without_devices_gets_zero_counts(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    msg = message(user="nobody")
    result = assert_ok(
        await client.post("/push/message/send", json=envelope(appId="mobile-app", message=msg))
    )
    assert all(c["total"] == 0 for c in result["responseObject"]["result"].values())


async def test_unknown_app_is_a_generic_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/push/message/send", json=envelope(appId="nope-app", message=message())
    )
    assert_error(response, "ERROR_GENERIC", contains="Application not found")


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"body": {"title": "x"}}, "Push message must contain a user ID."),
        ({"userId": "alice"}, "Push message payload (body) must not be null."),
        ({"userId": "alice", "body": {"badge": -1}}, "badge"),
        ({"userId": "alice", "priority": "URGENT", "body": {}}, "priority"),
        (
            {"userId": "alice", "body": {"validUntil": "tomorrow"}},
            "validUntil must be an ISO 8601 date and time (2026-12-01T12:00:00Z) or a Unix time",
        ),
        ({"userId": "alice", "body": {"body": 123}}, "body must be a string."),
        # No UTC instant: the largest and smallest datetimes, shifted out of range.
        ({"userId": "alice", "body": {"validUntil": "9999-12-31T23:59:59-12:00"}}, "out of range"),
        ({"userId": "alice", "body": {"validUntil": "0001-01-01T00:00:00+01:00"}}, "out of range"),
        # Wrongly typed, not guessed at.
        ({"userId": "alice", "body": {"badge": "3"}}, "badge must be an integer."),
        ({"userId": "alice", "body": {"badge": True}}, "badge must be an integer."),
        ({"userId": "alice", "body": {"badge": 1e2}}, "badge must be an integer."),
        ({"userId": "alice", "attributes": {"personal": "yes"}, "body": {}}, "boolean"),
        ({"userId": "alice", "attributes": {"silent": 1}, "body": {}}, "boolean"),
        # Beside userId rather than in attributes: refused, not silently ignored.
        (
            {"userId": "alice", "personal": True, "body": {}},
            'personal belongs in the message\'s attributes: "attributes": {"personal": true}.',
        ),
        ({"userId": "alice", "silent": False, "body": {}}, "silent belongs in the message's"),
        # APNs' limit for apns-collapse-id is 64 bytes: 64 characters of two bytes each is over.
        ({"userId": "alice", "body": {"collapseKey": "\u00e9" * 64}}, "64 bytes"),
    ],
)
async def test_bad_message_is_a_request_error(
    client: httpx.AsyncClient, app_ready: Emulators, msg: dict[str, Any], expected: str
) -> None:
    response = await client.post(
        "/push/message/send", json=envelope(appId="mobile-app", message=msg)
    )
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_bad_mode_and_empty_batch_are_request_errors(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/push/message/send", json=envelope(appId="mobile-app", mode="LATER", message=message())
    )
    assert_error(response, "ERROR_REQUEST", contains="mode")
    response = await client.post(
        "/push/message/batch/send", json=envelope(appId="mobile-app", batch=[])
    )
    assert_error(response, "ERROR_REQUEST", contains="batch")


async def test_async_send_is_committed_then_delivered_by_a_worker(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    body = envelope(appId="mobile-app", mode="ASYNCHRONOUS", message=message())
    data = assert_ok(await client.post("/push/message/send", json=body))["responseObject"]
    assert data == {"mode": "ASYNCHRONOUS"}
    assert (await queue_depth(services.db)) == {"queued": 1}
    assert app_ready.apns.received == []

    await run_worker_until_idle(services)
    assert [p.token for p in app_ready.apns.delivered()] == [IOS_TOKEN]
    assert len(app_ready.fcm.messages_to(ANDROID_TOKEN)) == 1
    assert (await queue_depth(services.db)) == {"done": 1}
    assert await ledger(services) == {"sent": 2}


async def test_async_batch_honours_back_pressure_and_delivers_each_once(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    for i in range(20):
        await register(client, f"{i:02x}" * 32, f"act-{i}", user=f"user-{i}")
    app_ready.apns.faults.too_many_requests_rate = 0.3
    app_ready.apns.faults.retry_after = 0
    batch = [message(user=f"user-{i}") for i in range(20)]
    body = envelope(appId="mobile-app", mode="ASYNCHRONOUS", batch=batch)
    assert_ok(await client.post("/push/message/batch/send", json=body))
    await run_worker_until_idle(services)
    delivered = [p.token for p in app_ready.apns.delivered()]
    assert sorted(delivered) == sorted(f"{i:02x}" * 32 for i in range(20))  # once each
    assert any(p.status == 429 for p in app_ready.apns.received)
    assert await ledger(services) == {"sent": 20}


async def test_async_batch_of_distinct_messages_gives_each_device_its_own(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    # One job, sent in one provider call per wave: every device must still get its own text.
    tokens = {f"user-{i}": f"{i + 0x40:02x}" * 32 for i in range(30)}
    for user, token in tokens.items():
        await register(client, token, f"act-{user}", user=user)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    batch = [message(user=u, body={"title": "Hi", "body": f"for {u}"}) for u in tokens]
    batch.append(message(user="alice", body={"title": "Hi", "body": "for alice"}))
    batch.append(message(user="user-0", body={"body": "too late", "validUntil": past}))
    body = envelope(appId="mobile-app", mode="ASYNCHRONOUS", batch=batch)
    assert_ok(await client.post("/push/message/batch/send", json=body))
    await run_worker_until_idle(services)

    got = {p.token: p.payload["aps"]["alert"]["body"] for p in app_ready.apns.delivered()}
    assert len(app_ready.apns.delivered()) == 31  # once each, the late one never
    assert got == {
        **{token: f"for {user}" for user, token in tokens.items()},
        IOS_TOKEN: "for alice",
    }
    [android] = app_ready.fcm.messages_to(ANDROID_TOKEN)
    assert android["android"]["notification"]["body"] == "for alice"
    assert await ledger(services) == {"sent": 32, "failed": 1}


async def test_a_job_that_runs_again_sends_nothing_twice(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    body = envelope(appId="mobile-app", mode="ASYNCHRONOUS", message=message())
    assert_ok(await client.post("/push/message/send", json=body))
    await run_worker_until_idle(services)
    # As after a crash between delivering and finishing: the job comes back.
    async with services.db.transaction() as session:
        job = (await session.scalars(select(Job))).one()
        job.state, job.finished_at = "queued", None
    await run_worker_until_idle(services)
    assert len(app_ready.apns.delivered()) == 1
    assert len(app_ready.fcm.messages_to(ANDROID_TOKEN)) == 1


async def test_rejected_credentials_fail_and_are_recorded(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    # A key the emulator does not know: APNs answers 403 InvalidProviderToken.
    other = ApnsEmulator().create_team_key("TEAM123456", "KEY1234567")
    ios = envelope(
        appId="mobile-app",
        bundle=BUNDLE,
        keyId="KEY1234567",
        teamId="TEAM123456",
        environment="production",
        privateKeyBase64=base64.b64encode(other).decode(),
    )
    assert_ok(await client.put("/admin/app/ios/update", json=ios))
    msg = envelope(appId="mobile-app", message=message(activationId="act-ios"))
    result = assert_ok(await client.post("/push/message/send", json=msg))["responseObject"][
        "result"
    ]
    assert result["ios"]["failed"] == 1
    async with services.db.reader() as session:
        row = (await session.scalars(select(Credential).where(Credential.platform == "apns"))).one()
    assert row.rejected_reason and "InvalidProviderToken" in row.rejected_reason
    # The operator sees it in the app's detail (an extension), until new credentials come.
    detail = assert_ok(await client.post("/admin/app/detail", json=envelope(appId="mobile-app")))
    shown = detail["responseObject"]
    assert "InvalidProviderToken" in shown["iosCredentialsRejected"]
    assert "androidCredentialsRejected" not in shown  # FCM's stand: the key is left out
    assert_ok(await client.put("/admin/app/ios/update", json=ios))
    again = assert_ok(await client.post("/admin/app/detail", json=envelope(appId="mobile-app")))
    assert "iosCredentialsRejected" not in again["responseObject"]


async def test_an_upload_clears_a_rejection_that_landed_after_it_read_the_row(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    # The race a new user hit: the upload reads the row (not rejected), a send's rejection of the
    # version being replaced lands (SQLite takes no row lock), then the upload writes. Its UPDATE
    # must name rejected_reason even though the value it read was already NULL, or the rejection
    # outlives the credentials it was about.
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert_ok(await client.put("/admin/app/ios/update", json=ios_update(app_ready)))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    [written] = [s for s in statements if s.lstrip().upper().startswith("UPDATE CREDENTIALS")]
    assert "rejected_reason" in written


async def test_platform_without_credentials_fails_without_a_call(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    await register(client, "hms-token-1", "act-hms", platform="huawei")
    result = assert_ok(
        await client.post(
            "/push/message/send", json=envelope(appId="mobile-app", message=message())
        )
    )["responseObject"]["result"]
    assert result["huawei"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}


async def run_worker_until_idle(services: Services, timeout: float = 20) -> None:
    import asyncio

    worker = services.worker()
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.05)
                depth = await queue_depth(services.db)
                if not depth.get("queued") and not depth.get("running"):
                    break
    finally:
        worker.stop()
        await task


async def ledger(services: Services) -> dict[str, int]:
    async with services.db.reader() as session:
        rows = await session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
        return {status: int(n) for status, n in rows}


async def test_delivery_metrics_count_outcomes_by_provider(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    def delivered(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('clarion_push_outcomes_total{outcome="delivered",provider="apns"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = delivered((await client.get("/metrics")).text)
    assert_ok(
        await client.post(
            "/push/message/send", json=envelope(appId="mobile-app", message=message())
        )
    )
    metrics = (await client.get("/metrics")).text
    assert delivered(metrics) == before + 1
    assert "clarion_provider_latency_seconds_bucket" in metrics


def provider_calls(text: str, provider: str) -> float:
    """How many provider calls (batches of tokens) ``/metrics`` has counted for ``provider``."""
    prefix = f'clarion_provider_latency_seconds_count{{provider="{provider}"}}'
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sends_made_together_share_one_call_per_provider_each_with_its_own_outcomes(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN_2, "act-ios-bob", user="bob")
    app_ready.apns.unregister_device(IOS_TOKEN_2)
    _, devices, versions = await services.sender.lookup("mobile-app", ["alice", "bob"])
    alice_ios = [t for t in devices["alice"] if t.platform == "apns"]
    alice_android = [t for t in devices["alice"] if t.platform == "fcm"]
    before = (await client.get("/metrics")).text

    def note(title: str) -> Notification:
        return Notification(title=title, body="b")

    answers = await asyncio.gather(
        services.sender.send_together(
            "mobile-app", [(note("for alice"), alice_ios)], versions=versions
        ),
        services.sender.send_together(
            "mobile-app", [(note("for bob"), devices["bob"])], versions=versions
        ),
        services.sender.send_together(
            "mobile-app",
            [(note("android 1"), alice_android), (note("android 2"), alice_android)],
            versions=versions,
        ),
    )
    kinds = [[o.kind for o in item] for answer in answers for item in answer]
    assert kinds == [
        [OutcomeKind.DELIVERED],
        [OutcomeKind.TOKEN_DEAD],
        [OutcomeKind.DELIVERED],
        [OutcomeKind.DELIVERED],
    ]
    [to_alice] = app_ready.apns.delivered()
    assert to_alice.token == IOS_TOKEN and to_alice.payload["aps"]["alert"]["title"] == "for alice"
    fcm_titles = [
        m["android"]["notification"]["title"] for m in app_ready.fcm.messages_to(ANDROID_TOKEN)
    ]
    assert sorted(fcm_titles) == ["android 1", "android 2"]
    after = (await client.get("/metrics")).text
    # Three callers, two providers: one APNs call for two tokens, one FCM call for two.
    assert provider_calls(after, "apns") == provider_calls(before, "apns") + 1
    assert provider_calls(after, "fcm") == provider_calls(before, "fcm") + 1
    # A send in a later turn of the event loop makes a call of its own.
    [[again]] = await services.sender.send_together(
        "mobile-app", [(note("later"), alice_ios)], versions=versions
    )
    assert again.kind is OutcomeKind.DELIVERED
    later = (await client.get("/metrics")).text
    assert provider_calls(later, "apns") == provider_calls(after, "apns") + 1


async def test_sync_sends_made_together_share_one_lookup_each_counting_its_own_devices(
    client: httpx.AsyncClient,
    services: Services,
    app_ready: Emulators,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await register(client, IOS_TOKEN_2, "act-ios-bob", user="bob")
    lookups: list[list[str]] = []
    real_lookup = services.sender.lookup

    async def counted(app_id: str, users: Sequence[str]) -> Any:
        lookups.append(sorted(users))
        return await real_lookup(app_id, users)

    monkeypatch.setattr(services.sender, "lookup", counted)

    def spec(user: str) -> MessageSpec:
        return MessageSpec(user, Notification(title=f"for {user}", body="b"))

    alice, bob, nobody, unknown = await asyncio.gather(
        services.messages.send_now("mobile-app", [spec("alice")]),
        services.messages.send_now("mobile-app", [spec("bob"), spec("bob")]),
        services.messages.send_now("mobile-app", [spec("nobody")]),
        services.messages.send_now("no-such-app", [spec("alice")]),
        return_exceptions=True,
    )
    assert isinstance(unknown, NotFound)
    assert isinstance(alice, SendResult) and isinstance(bob, SendResult)
    assert isinstance(nobody, SendResult)
    counts = {
        name: {p.value: (c.sent, c.failed) for p, c in r.by_platform.items() if c.total}
        for name, r in (("alice", alice), ("bob", bob), ("nobody", nobody))
    }
    assert counts == {
        "alice": {"apns": (1, 0), "fcm": (1, 0)},
        "bob": {"apns": (2, 0)},
        "nobody": {},
    }
    assert sorted(lookups) == [["alice"], ["alice", "bob", "nobody"]]
    titles = sorted(p.payload["aps"]["alert"]["title"] for p in app_ready.apns.delivered())
    assert titles == ["for alice", "for bob", "for bob"]


class TestStoredMessages:
    @pytest.fixture
    def settings_overrides(self, emulators: Emulators) -> dict[str, Any]:
        return {
            **emulator_settings(emulators),
            "store_messages": True,
        }

    async def test_sync_sends_are_recorded_per_device(
        self, client: httpx.AsyncClient, services: Services, app_ready: Emulators
    ) -> None:
        app_ready.apns.unregister_device(IOS_TOKEN)
        body = envelope(appId="mobile-app", message=message())
        assert_ok(await client.post("/push/message/send", json=body))
        async with services.db.reader() as session:
            rows = {(d.token, d.status) for d in (await session.scalars(select(Delivery))).all()}
        assert rows == {(IOS_TOKEN, "failed"), (ANDROID_TOKEN, "sent")}
        assert (await queue_depth(services.db)) == {}  # nothing to retry, no job
        # Nothing left to retry: stored as complete (retention may delete it in time).
        async with services.db.reader() as session:
            [stored] = (await session.scalars(select(PushMessage))).all()
        assert stored.completed_at is not None

    async def test_a_sync_send_with_a_retry_is_complete_once_its_job_sent_it(
        self, client: httpx.AsyncClient, services: Services, app_ready: Emulators
    ) -> None:
        app_ready.apns.faults.by_token[IOS_TOKEN] = (429, "TooManyRequests")
        body = envelope(appId="mobile-app", message=message())
        result = assert_ok(await client.post("/push/message/send", json=body))
        assert result["responseObject"]["result"]["ios"]["pending"] == 1

        async def completed() -> list[bool]:
            async with services.db.reader() as session:
                stored = (await session.scalars(select(PushMessage))).all()
            return [m.completed_at is not None for m in stored]

        assert await completed() == [False]  # its iOS device waits for the retry
        del app_ready.apns.faults.by_token[IOS_TOKEN]
        await run_worker_until_idle(services)
        assert [p.token for p in app_ready.apns.delivered()] == [IOS_TOKEN]
        assert await completed() == [True]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (None, "Push message at position 1 must not be null."),
        ("x", "Push message at position 1 must be a JSON object."),
        ({"body": {}}, "Push message at position 1 must contain a user ID."),
        ({"userId": "bob"}, "Push message at position 1 payload (body) must not be null."),
        ({"userId": "bob", "body": {"badge": "3"}}, "Push message at position 1: badge must"),
        ({"userId": "bob", "body": {"title": 5}}, "Push message at position 1: title must"),
        (
            {"userId": "bob", "body": {"badge": -1}},
            "Push message at position 1: Invalid value of requestObject.batch[1].body.badge: ",
        ),
    ],
)
async def test_a_bad_message_in_a_batch_is_named_by_its_position(
    client: httpx.AsyncClient, app_ready: Emulators, item: Any, expected: str
) -> None:
    body = envelope(appId="mobile-app", batch=[message(), item])
    response = await client.post("/push/message/batch/send", json=body)
    assert_error(response, "ERROR_REQUEST", contains=expected)


@pytest.mark.parametrize(("count", "accepted"), [(2030, True), (2050, False)])
async def test_extras_are_limited_to_4_kb_of_utf8_as_sent(
    client: httpx.AsyncClient, app_ready: Emulators, count: int, accepted: bool
) -> None:
    """ "é" is 2 bytes in the payload: 2,030 of them fit in 4 KB (escaped they would not)."""
    body = message(body={"title": "x", "extras": {"k": "\u00e9" * count}})
    response = await client.post(
        "/push/message/send", json=envelope(appId="mobile-app", mode="ASYNCHRONOUS", message=body)
    )
    if accepted:
        assert_ok(response)
    else:
        assert_error(response, "ERROR_REQUEST", contains="4096 bytes")


async def test_explicit_nulls_of_optional_fields_take_their_defaults(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    # Jackson writes null for an unset field: "mode": null was a 400 while a null activationId
    # was taken as absent.
    nulls = message(priority=None, attributes={"personal": None, "silent": None})
    body = envelope(appId="mobile-app", mode=None, message=nulls)
    result = assert_ok(await client.post("/push/message/send", json=body))["responseObject"]
    assert result["mode"] == "SYNCHRONOUS"
    assert result["result"]["ios"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
    [push] = app_ready.apns.delivered()
    assert push.headers["apns-priority"] == "10"  # HIGH
    assert push.headers["apns-push-type"] == "alert"  # not silent
    detail = envelope(appId="mobile-app", includeIos=None, includeAndroid=None)
    shown = assert_ok(await client.post("/admin/app/detail", json=detail))["responseObject"]
    assert shown["application"]["ios"] is True and shown["iosBundle"] == BUNDLE
    # A required field's null is still named.
    missing = await client.post("/push/message/send", json=envelope(appId=None, message=nulls))
    assert assert_error(missing, "ERROR_REQUEST") == "App ID must not be null."


class TestMultipleActivations:
    @pytest.fixture
    def settings_overrides(self, emulators: Emulators) -> dict[str, Any]:
        return {
            **emulator_settings(emulators),
            "multiple_activations": True,
        }

    @pytest.mark.parametrize("mode", ["SYNCHRONOUS", "ASYNCHRONOUS"])
    async def test_a_token_registered_for_two_activations_gets_one_push(
        self, client: httpx.AsyncClient, services: Services, emulators: Emulators, mode: str
    ) -> None:
        await setup_app(client, emulators)
        body = envelope(
            appId="mobile-app",
            token=IOS_TOKEN,
            platform="ios",
            activationIds=["act-a", "act-b"],
            userId="alice",
        )
        assert_ok(await client.post("/push/device/create/multi", json=body))
        async with services.db.reader() as session:
            assert len((await session.scalars(select(Device.id))).all()) == 2
        msg = envelope(appId="mobile-app", mode=mode, message=message())
        result = assert_ok(await client.post("/push/message/send", json=msg))
        if mode == "SYNCHRONOUS":
            counts = result["responseObject"]["result"]["ios"]
            assert counts == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
        await run_worker_until_idle(services)
        await run_worker_until_idle(services)  # a second run sends nothing either
        assert [p.token for p in emulators.apns.delivered()] == [IOS_TOKEN]
