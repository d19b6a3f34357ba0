"""The APNs emulator's stream limit, seen from a raw HTTP/2 client that does not respect it.

The emulator counts its open streams only when the streams it holds reach the limit (see
``clarion.emulators.apns_connection._Connection``): these check that the limit still holds
exactly, and that finished streams stop counting.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import h2.config
import h2.connection
import h2.events
from apns_fixtures import BUNDLE, KEY_ID, TEAM_ID, TeamKey, device
from cryptography.hazmat.primitives import serialization

from clarion.emulators.apns import ApnsEmulator
from clarion.providers.apns_jwt import sign_provider_token

LIMIT = 4
BODY = b'{"aps":{"alert":"hi"}}'


class _Unbounded(h2.connection.H2Connection):
    """A client connection that opens streams whatever the server's limit says."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


class RawClient:
    """An HTTP/2 client that writes whatever frames it is told to, in one go."""

    def __init__(self, emulator: ApnsEmulator, team_key: TeamKey) -> None:
        self.emulator = emulator
        key = serialization.load_pem_private_key(team_key.private_pem, None)
        self.jwt = sign_provider_token(
            key,  # type: ignore[arg-type]
            key_id=KEY_ID,
            team_id=TEAM_ID,
            issued_at=int(time.time()),
        )
        self.conn = _Unbounded(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.statuses: dict[int, int] = {}
        self.closed = False

    async def __aenter__(self) -> RawClient:
        context = ssl.create_default_context(cafile=self.emulator.ca_file)
        context.set_alpn_protocols(["h2"])
        self.reader, self.writer = await asyncio.open_connection(
            self.emulator.host, self.emulator.port, ssl=context
        )
        self.conn.initiate_connection()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()

    def open(self, stream_id: int, *, end: bool) -> None:
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.push.apple.com"),
            (":path", f"/3/device/{device(stream_id)}"),
            ("apns-topic", BUNDLE),
            ("authorization", f"bearer {self.jwt}"),
        ]
        self.conn.send_headers(stream_id, headers)
        if end:
            self.finish(stream_id)

    def finish(self, stream_id: int) -> None:
        self.conn.send_data(stream_id, BODY, end_stream=True)

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        try:
            await self.writer.drain()
        except ConnectionResetError:  # the server aborted the connection
            self.closed = True

    async def read_answers(self, count: int, timeout: float = 30.0) -> None:
        """Read until ``count`` more answers came or the server closed the connection."""
        wanted = len(self.statuses) + count
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.statuses) < wanted and not self.closed:
            left = deadline - asyncio.get_running_loop().time()
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers or ())
                    self.statuses[event.stream_id] = int(headers[":status"])
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.closed = True
            await self.flush()


async def test_as_many_open_streams_as_the_limit_are_served(team_key: TeamKey) -> None:
    async with ApnsEmulator(max_concurrent_streams=LIMIT) as emu:
        emu.register_key(TEAM_ID, KEY_ID, team_key.public_key)
        emu.register_bundle(BUNDLE, TEAM_ID)
        async with RawClient(emu, team_key) as client:
            streams = [1 + 2 * i for i in range(LIMIT)]
            for stream_id in streams:  # all open at once, then all finished
                client.open(stream_id, end=False)
            for stream_id in streams:
                client.finish(stream_id)
            await client.flush()
            await client.read_answers(LIMIT)
    assert client.statuses == dict.fromkeys(streams, 200)
    assert not client.closed


async def test_a_stream_over_the_limit_is_refused(team_key: TeamKey) -> None:
    async with ApnsEmulator(max_concurrent_streams=LIMIT) as emu:
        emu.register_key(TEAM_ID, KEY_ID, team_key.public_key)
        emu.register_bundle(BUNDLE, TEAM_ID)
        async with RawClient(emu, team_key) as client:
            streams = [1 + 2 * i for i in range(LIMIT + 1)]
            for stream_id in streams:
                client.open(stream_id, end=False)
            for stream_id in streams:
                client.finish(stream_id)
            await client.flush()
            await client.read_answers(LIMIT + 1)
        assert emu.request_count == 0  # the fifth stream ended the connection before any ended
    assert client.closed
    assert client.statuses == {}


async def test_finished_streams_stop_counting_against_the_limit(team_key: TeamKey) -> None:
    async with ApnsEmulator(max_concurrent_streams=LIMIT) as emu:
        emu.register_key(TEAM_ID, KEY_ID, team_key.public_key)
        emu.register_bundle(BUNDLE, TEAM_ID)
        async with RawClient(emu, team_key) as client:
            stream_id = 1
            for _ in range(5):  # five rounds of the limit, each after the last was answered
                for _ in range(LIMIT):
                    client.open(stream_id, end=True)
                    stream_id += 2
                await client.flush()
                await client.read_answers(LIMIT)
            # And after them, the limit again: as many open at once as it allows, not one more.
            held = [stream_id + 2 * i for i in range(LIMIT)]
            for sid in held:
                client.open(sid, end=False)
            await client.flush()
            await asyncio.sleep(0.2)
            assert not client.closed
            client.open(stream_id + 2 * LIMIT, end=False)
            await client.flush()
            await client.read_answers(1)
    assert list(client.statuses.values()) == [200] * 5 * LIMIT
    assert client.closed
