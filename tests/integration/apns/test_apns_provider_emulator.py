"""ApnsProvider against the APNs emulator over real TLS and HTTP/2 on loopback."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from apns_fixtures import BUNDLE, TEAM_ID, TeamKey, device, make_team_key, token_credentials
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from tests.wc_support import apns_p12

from clarion.emulators.apns import ApnsEmulator
from clarion.providers.apns import ApnsProvider, create_apns_provider, pkcs12_to_pem
from clarion.providers.base import ApnsCredentials, Notification, OutcomeKind

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def test_push_is_delivered_with_apples_headers_and_payload(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    n = Notification(title="Hello", body="World", badge=1, collapse_key="chat-7")
    outcomes = await provider.send(n, [device(1), device(2)])
    assert [(o.token, o.kind, o.status) for o in outcomes] == [
        (device(1), OutcomeKind.DELIVERED, 200),
        (device(2), OutcomeKind.DELIVERED, 200),
    ]
    first = next(r for r in emulator.received if r.token == device(1))
    assert first.payload == {
        "aps": {"alert": {"title": "Hello", "body": "World"}, "badge": 1, "thread-id": "chat-7"}
    }
    assert first.headers["apns-topic"] == BUNDLE
    assert first.headers["apns-push-type"] == "alert"
    assert first.headers["apns-priority"] == "10"
    assert first.headers["apns-collapse-id"] == "chat-7"
    assert UUID.fullmatch(first.headers["apns-id"])
    assert first.headers["authorization"].startswith("bearer ")


async def test_unregistered_token_is_dead(provider: ApnsProvider, emulator: ApnsEmulator) -> None:
    emulator.unregister_device(device(3), timestamp_ms=1_700_000_123_456)
    [outcome] = await provider.send(Notification(body="b"), [device(3)])
    assert (outcome.kind, outcome.reason, outcome.status) == (
        OutcomeKind.TOKEN_DEAD,
        "Unregistered",
        410,
    )
    # Apple's timestamp (ms): since when the token is invalid, for the caller's removal rule.
    assert outcome.invalid_since == 1_700_000_123.456


async def test_bad_device_token_is_dead(provider: ApnsProvider, emulator: ApnsEmulator) -> None:
    emulator.faults.by_token[device(4)] = (400, "BadDeviceToken")
    outcomes = await provider.send(Notification(body="b"), [device(4), device(5)])
    assert [(o.kind, o.reason) for o in outcomes] == [
        (OutcomeKind.TOKEN_DEAD, "BadDeviceToken"),
        (OutcomeKind.DELIVERED, None),
    ]


async def test_token_for_another_app_is_dead(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.bind_device(device(6), "com.example.other")
    [outcome] = await provider.send(Notification(body="b"), [device(6)])
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "DeviceTokenNotForTopic")


async def test_malformed_token_is_dead_without_being_sent(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    [outcome] = await provider.send(Notification(body="b"), ["not-hex/../x"])
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "BadDeviceToken")
    assert emulator.received == []


async def test_wrong_key_is_credentials_rejected(emulator: ApnsEmulator) -> None:
    impostor = create_apns_provider(
        token_credentials(make_team_key()), base_url=emulator.url, ca_file=emulator.ca_file
    )
    try:
        outcomes = await impostor.send(Notification(body="b"), [device(1), device(2)])
    finally:
        await impostor.close()
    assert {(o.kind, o.reason, o.status) for o in outcomes} == {
        (OutcomeKind.CREDENTIALS_REJECTED, "InvalidProviderToken", 403)
    }
    assert emulator.delivered() == []


async def test_topic_of_another_team_is_credentials_rejected(
    emulator: ApnsEmulator, team_key: TeamKey
) -> None:
    emulator.register_bundle("com.someone.else", "OTHERTEAM1")
    credentials = ApnsCredentials(
        bundle="com.someone.else",
        sandbox=False,
        key_id="KEY0000001",
        team_id=TEAM_ID,
        private_key_pem=team_key.private_pem,
    )
    p = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        [outcome] = await p.send(Notification(body="b"), [device(1)])
    finally:
        await p.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.CREDENTIALS_REJECTED, "TopicDisallowed")


async def test_too_many_requests_is_retried_after_retry_after(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.faults.too_many_requests_rate = 1.0
    emulator.faults.retry_after = 30
    [outcome] = await provider.send(Notification(body="b"), [device(1)])
    assert (outcome.kind, outcome.reason, outcome.status, outcome.retry_after) == (
        OutcomeKind.RETRY,
        "TooManyRequests",
        429,
        30.0,
    )


async def test_server_errors_are_retried_and_then_delivered(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.faults.error_burst = 2
    emulator.faults.error_status, emulator.faults.error_reason = 503, "ServiceUnavailable"
    first = await provider.send(Notification(body="b"), [device(1), device(2)])
    assert {(o.kind, o.reason, o.status) for o in first} == {
        (OutcomeKind.RETRY, "ServiceUnavailable", 503)
    }
    emulator.faults.error_status, emulator.faults.error_reason = 500, "InternalServerError"
    emulator.faults.error_burst = 1
    [second] = await provider.send(Notification(body="b"), [device(1)])
    assert (second.kind, second.status) == (OutcomeKind.RETRY, 500)
    again = await provider.send(Notification(body="b"), [device(1), device(2)])
    assert {o.kind for o in again} == {OutcomeKind.DELIVERED}


async def _send_until_settled(
    provider: ApnsProvider, tokens: list[str], rounds: int = 5
) -> dict[str, OutcomeKind]:
    """What the retry layer does, reduced: resend what came back RETRY."""
    settled: dict[str, OutcomeKind] = {}
    pending = tokens
    for _ in range(rounds):
        outcomes = await provider.send(Notification(body="b"), pending)
        for o in outcomes:
            settled[o.token] = o.kind
        pending = [o.token for o in outcomes if o.kind is OutcomeKind.RETRY]
        if not pending:
            break
    return settled


async def test_goaway_is_survived_on_a_new_connection(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.faults.goaway_after = 10
    emulator.faults.goaway_limit = 2
    tokens = [device(i) for i in range(60)]
    first = await provider.send(Notification(body="b"), tokens)
    assert {o.kind for o in first} <= {OutcomeKind.DELIVERED, OutcomeKind.RETRY}
    settled = await _send_until_settled(provider, tokens)
    assert set(settled.values()) == {OutcomeKind.DELIVERED}
    assert emulator.connection_count >= 2
    assert {r.token for r in emulator.delivered()} == set(tokens)


async def test_dropped_connection_is_survived(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.faults.drop_after = 5
    emulator.faults.drop_limit = 1
    tokens = [device(i) for i in range(30)]
    settled = await _send_until_settled(provider, tokens)
    assert set(settled.values()) == {OutcomeKind.DELIVERED}
    assert emulator.connection_count == 2


async def test_slow_answer_times_out_as_retry(emulator: ApnsEmulator, team_key: TeamKey) -> None:
    p = create_apns_provider(
        token_credentials(team_key), base_url=emulator.url, ca_file=emulator.ca_file, timeout=0.3
    )
    emulator.faults.delay = 1.0
    try:
        started = time.monotonic()
        [outcome] = await p.send(Notification(body="b"), [device(1)])
    finally:
        await p.close()
    assert outcome.kind is OutcomeKind.RETRY
    assert time.monotonic() - started < 1.0


async def test_payload_too_large_is_not_sent(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    outcomes = await provider.send(Notification(body="x" * 5000), [device(1), device(2)])
    assert {(o.kind, o.reason) for o in outcomes} == {(OutcomeKind.FAILED, "PayloadTooLarge")}
    assert emulator.received == []


async def test_expired_message_is_not_sent(provider: ApnsProvider, emulator: ApnsEmulator) -> None:
    late = Notification(body="b", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    [outcome] = await provider.send(late, [device(1)])
    assert outcome.kind is OutcomeKind.FAILED
    assert emulator.received == []


async def test_one_provider_token_serves_many_requests(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    await provider.send(Notification(body="a"), [device(i) for i in range(50)])
    await provider.send(Notification(body="b"), [device(i) for i in range(50, 100)])
    assert len(emulator.delivered()) == 100
    assert len({r.headers["authorization"] for r in emulator.received}) == 1


async def test_expired_provider_token_is_renewed_once_then_reported(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.clock = lambda: time.time() + 2 * 3600  # every token looks two hours old
    [outcome] = await provider.send(Notification(body="b"), [device(1)])
    assert (outcome.kind, outcome.reason) == (
        OutcomeKind.CREDENTIALS_REJECTED,
        "ExpiredProviderToken",
    )
    assert len(emulator.received) == 2
    assert len({r.headers["authorization"] for r in emulator.received}) == 2


async def test_certificate_auth_delivers_without_a_provider_token(
    emulator: ApnsEmulator,
) -> None:
    cert = emulator.issue_client_certificate("com.example.certapp")
    credentials = ApnsCredentials(
        bundle="com.example.certapp", sandbox=False, certificate_pem=cert.combined_pem
    )
    p = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        [outcome] = await p.send(Notification(body="b"), [device(1)])
    finally:
        await p.close()
    assert outcome.kind is OutcomeKind.DELIVERED
    [received] = emulator.received
    assert "authorization" not in received.headers
    assert received.headers["apns-topic"] == "com.example.certapp"


async def test_pkcs12_certificate_converts_and_authenticates(emulator: ApnsEmulator) -> None:
    cert = emulator.issue_client_certificate("com.example.p12app")
    p12 = pkcs12.serialize_key_and_certificates(
        b"apns",
        serialization.load_pem_private_key(cert.key_pem, None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(cert.cert_pem),
        None,
        serialization.BestAvailableEncryption(b"secret"),
    )
    credentials = ApnsCredentials(
        bundle="com.example.p12app", sandbox=False, certificate_pem=pkcs12_to_pem(p12, b"secret")
    )
    p = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        [outcome] = await p.send(Notification(body="b"), [device(1)])
    finally:
        await p.close()
    assert outcome.kind is OutcomeKind.DELIVERED


async def test_certificate_cannot_push_to_another_bundle(emulator: ApnsEmulator) -> None:
    cert = emulator.issue_client_certificate("com.example.certapp")
    credentials = ApnsCredentials(bundle=BUNDLE, sandbox=False, certificate_pem=cert.combined_pem)
    p = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        [outcome] = await p.send(Notification(body="b"), [device(1)])
    finally:
        await p.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.CREDENTIALS_REJECTED, "TopicDisallowed")


async def test_expired_provider_token_is_renewed_and_the_push_delivered(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    skews = [2 * 3600.0]  # the first check sees the token two hours old, later ones do not

    def clock() -> float:
        return time.time() + (skews.pop() if skews else 0.0)

    emulator.clock = clock
    [outcome] = await provider.send(Notification(body="b"), [device(1)])
    assert outcome.kind is OutcomeKind.DELIVERED
    assert [r.reason for r in emulator.received] == ["ExpiredProviderToken", None]


async def test_token_update_throttling_is_retried_later_without_a_new_token(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    emulator.faults.by_token[device(1)] = (429, "TooManyProviderTokenUpdates")
    outcomes = await provider.send(Notification(body="b"), [device(1), device(2)])
    assert outcomes[0].kind is OutcomeKind.RETRY
    assert outcomes[0].retry_after is not None and outcomes[0].retry_after >= 60
    assert outcomes[1].kind is OutcomeKind.DELIVERED
    assert len({r.headers["authorization"] for r in emulator.received}) == 1


async def test_every_push_is_classified_under_random_faults(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    tokens = [device(i) for i in range(2000)]
    for token in tokens[:50]:
        emulator.unregister_device(token)
    emulator.faults.too_many_requests_rate = 0.05
    emulator.faults.server_error_rate = 0.05
    outcomes = await provider.send(Notification(body="b"), tokens)
    assert [o.token for o in outcomes] == tokens
    kinds = {o.token: o.kind for o in outcomes}
    # A dead token may meet an injected 429 or 5xx first, as it could at Apple.
    assert {kinds[t] for t in tokens[:50]} <= {OutcomeKind.TOKEN_DEAD, OutcomeKind.RETRY}
    retries = [t for t in tokens if kinds[t] is OutcomeKind.RETRY]
    assert 100 < len(retries) < 400
    assert set(kinds.values()) == {
        OutcomeKind.DELIVERED,
        OutcomeKind.RETRY,
        OutcomeKind.TOKEN_DEAD,
    }
    answered = {r.token for r in emulator.received}
    assert answered == set(tokens)


async def test_server_stream_limit_is_respected(team_key: TeamKey) -> None:
    async with ApnsEmulator(max_concurrent_streams=4) as emu:
        emu.register_key(TEAM_ID, "KEY0000001", team_key.public_key)
        emu.register_bundle(BUNDLE)
        p = create_apns_provider(token_credentials(team_key), base_url=emu.url, ca_file=emu.ca_file)
        try:
            outcomes = await p.send(Notification(body="b"), [device(i) for i in range(200)])
        finally:
            await p.close()
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert emu.connection_count == 1


async def test_one_stream_until_authenticated_then_many(team_key: TeamKey) -> None:
    async with ApnsEmulator(
        single_stream_until_authenticated=True, max_concurrent_streams=50
    ) as emu:
        emu.register_key(TEAM_ID, "KEY0000001", team_key.public_key)
        emu.register_bundle(BUNDLE)
        p = create_apns_provider(token_credentials(team_key), base_url=emu.url, ca_file=emu.ca_file)
        try:
            outcomes = await p.send(Notification(body="b"), [device(i) for i in range(300)])
        finally:
            await p.close()
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert emu.connection_count == 1


async def test_goaway_is_survived_when_new_connections_start_with_one_stream(
    team_key: TeamKey,
) -> None:
    emulator = ApnsEmulator(single_stream_until_authenticated=True)
    async with emulator as emu:
        emu.register_key(TEAM_ID, "KEY0000001", team_key.public_key)
        emu.register_bundle(BUNDLE)
        emu.faults.goaway_after = 20
        emu.faults.goaway_limit = 3
        p = create_apns_provider(token_credentials(team_key), base_url=emu.url, ca_file=emu.ca_file)
        tokens = [device(i) for i in range(200)]
        try:
            settled = await _send_until_settled(p, tokens)
        finally:
            await p.close()
    assert set(settled.values()) == {OutcomeKind.DELIVERED}
    # Requests already queued in the pool may still overrun a new connection's single stream
    # (the emulator then drops it): more connections than GOAWAYs, but nothing is lost.
    assert emu.connection_count >= 4


async def test_send_many_sends_each_token_its_own_notification(
    provider: ApnsProvider, emulator: ApnsEmulator
) -> None:
    first, second = Notification(title="One", body="first"), Notification(body="second", badge=3)
    too_big = Notification(body="x" * 5000)
    late = Notification(body="late", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    outcomes = await provider.send_many(
        [
            (first, [device(1), device(2)]),
            (too_big, [device(3)]),
            (second, [device(4)]),
            (late, [device(5)]),
        ]
    )
    assert [(o.token, o.kind, o.reason) for o in outcomes] == [
        (device(1), OutcomeKind.DELIVERED, None),
        (device(2), OutcomeKind.DELIVERED, None),
        (device(3), OutcomeKind.FAILED, "PayloadTooLarge"),
        (device(4), OutcomeKind.DELIVERED, None),
        (device(5), OutcomeKind.FAILED, "MessageExpired"),
    ]
    received = {r.token: r.payload for r in emulator.received}
    assert received == {
        device(1): {"aps": {"alert": {"title": "One", "body": "first"}}},
        device(2): {"aps": {"alert": {"title": "One", "body": "first"}}},
        device(4): {"aps": {"alert": {"body": "second"}, "badge": 3}},
    }


async def test_an_expired_certificate_rejects_the_credentials_without_a_connection(
    emulator: ApnsEmulator,
) -> None:
    # APNs refuses it in the TLS handshake, which the client sees as a closed connection: a
    # retry for ever, where the operator must renew the certificate.
    credentials = ApnsCredentials(
        bundle="com.example.old",
        sandbox=False,
        certificate_pem=pkcs12_to_pem(apns_p12(b"pw", days=-1), b"pw"),
    )
    p = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        outcomes = await p.send(Notification(body="b"), [device(1), device(2)])
    finally:
        await p.close()
    assert [o.kind for o in outcomes] == [OutcomeKind.CREDENTIALS_REJECTED] * 2
    reason = outcomes[0].reason or ""
    assert reason.startswith("CertificateExpired: the APNs certificate expired at "), reason
    assert emulator.connection_count == 0 and emulator.received == []
