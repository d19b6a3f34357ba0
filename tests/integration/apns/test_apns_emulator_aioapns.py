"""Faithfulness: someone else's APNs client (aioapns) gets Apple's answers from the emulator."""

from __future__ import annotations

import ssl
import uuid

from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsProductionClientProtocol
from apns_fixtures import BUNDLE, KEY_ID, TEAM_ID, TeamKey, device

from clarion.emulators.apns import ApnsEmulator


def _aioapns_client(emulator: ApnsEmulator, team_key: TeamKey) -> APNs:
    context = ssl.create_default_context(cafile=emulator.ca_file)
    client = APNs(
        key=team_key.private_pem.decode(),
        key_id=KEY_ID,
        team_id=TEAM_ID,
        topic=BUNDLE,
        ssl_context=context,
    )

    # aioapns only knows Apple's hosts; point its connections at the emulator.
    class ToEmulator(APNsProductionClientProtocol):
        APNS_SERVER = emulator.host
        APNS_PORT = emulator.port

    client.pool.protocol_class = ToEmulator
    return client


async def test_aioapns_good_request_is_accepted(emulator: ApnsEmulator, team_key: TeamKey) -> None:
    client = _aioapns_client(emulator, team_key)
    notification_id = str(uuid.uuid4())
    result = await client.send_notification(
        NotificationRequest(
            device_token=device(1),
            message={"aps": {"alert": "hello"}},
            notification_id=notification_id,
            push_type=PushType.ALERT,
        )
    )
    client.pool.close()
    assert result.is_successful
    assert result.notification_id == notification_id
    [record] = emulator.received
    assert record.payload == {"aps": {"alert": "hello"}}
    assert record.headers["apns-topic"] == BUNDLE


async def test_aioapns_gets_apples_reason_for_a_dead_token(
    emulator: ApnsEmulator, team_key: TeamKey
) -> None:
    emulator.unregister_device(device(2))
    client = _aioapns_client(emulator, team_key)
    result = await client.send_notification(
        NotificationRequest(device_token=device(2), message={"aps": {"alert": "hello"}})
    )
    bad = await client.send_notification(
        NotificationRequest(device_token="zz", message={"aps": {"alert": "hello"}})
    )
    client.pool.close()
    assert (result.status, result.description) == ("410", "Unregistered")
    assert result.timestamp is not None
    assert (bad.status, bad.description) == ("400", "BadDeviceToken")


async def test_aioapns_with_an_unregistered_key_is_refused(emulator: ApnsEmulator) -> None:
    from apns_fixtures import make_team_key

    client = _aioapns_client(emulator, make_team_key())
    result = await client.send_notification(
        NotificationRequest(device_token=device(3), message={"aps": {"alert": "hello"}})
    )
    client.pool.close()
    assert (result.status, result.description) == ("403", "InvalidProviderToken")
