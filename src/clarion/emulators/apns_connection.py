"""One emulated APNs connection: HTTP/2 framing (h2) and Apple's per-request checks, in order."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack.hpack
from hpack import huffman_table

if TYPE_CHECKING:
    from clarion.emulators.apns import ApnsEmulator

MAX_PAYLOAD_BYTES = 4096
MAX_VOIP_PAYLOAD_BYTES = 5120
MAX_TOKEN_AGE = 3600
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DEVICE_PATH = "/3/device/"
_MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
_CHECKED_HEADERS = frozenset(
    {
        "authorization",
        "apns-id",
        "apns-topic",
        "apns-push-type",
        "apns-priority",
        "apns-expiration",
        "apns-collapse-id",
    }
)


def _remember_long_huffman_values() -> None:
    """Make hpack remember what its longest Huffman-coded header values decode to.

    A provider token (a JWT of about 200 bytes) comes with every request, Huffman-coded and
    never indexed (its header is sensitive), and hpack's pure-Python decoder took a sixth of
    the emulator's time decoding it again and again. Decoding is a pure function of the bytes,
    so answering a value seen before from a bounded table changes nothing but the time. Short
    values (paths with a device token, apns-id) differ per request and are decoded as before.
    """
    namespace = vars(hpack.hpack)  # where hpack's Decoder looks the function up
    if namespace.get("decode_huffman") is not huffman_table.decode_huffman:
        return  # already done, or hpack changed: leave it as it is
    decode: Callable[[bytes | bytearray | memoryview | None], bytes]
    decode = huffman_table.decode_huffman
    known: dict[bytes, bytes] = {}

    def remembered(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
        if huffman_string is None or len(huffman_string) < 64:
            return decode(huffman_string)
        key = bytes(huffman_string)
        found = known.get(key)
        if found is None:
            if len(known) >= 1024:
                known.clear()
            found = known[key] = decode(key)
        return found

    namespace["decode_huffman"] = remembered


_remember_long_huffman_values()


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """One request as the emulator saw it, and what it answered."""

    token: str
    headers: dict[str, str]
    body: bytes
    payload: Any  # the decoded JSON, None if the body was not JSON
    status: int
    reason: str | None
    connection: int  # which connection it came on (1, 2, ...)


class Rejection(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


class ConnectionAuth:
    """What APNs binds to a connection: its team and its current provider token."""

    __slots__ = ("certificate_topic", "issued_at", "team_id", "token")

    def __init__(self, certificate_topic: str | None) -> None:
        self.certificate_topic = certificate_topic
        self.team_id: str | None = None
        self.token: str | None = None
        self.issued_at = 0


class _Connection(h2.connection.H2Connection):
    """h2's connection, counting its open streams only when the count can matter.

    h2 counts the open streams (and forgets the closed ones) by walking every stream it holds,
    for each new stream: with hundreds in flight, a tenth of the emulator's time. It only
    compares the count with MAX_CONCURRENT_STREAMS, and the streams it holds, open or closed,
    are at least as many as the open ones: while those are fewer than the limit, their number
    gives the same answer, and the walk (which also forgets the closed ones) waits until then.
    """

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.local_settings.max_concurrent_streams:
            return held
        return super().open_inbound_streams


class ApnsServerProtocol(asyncio.Protocol):
    def __init__(self, emulator: ApnsEmulator) -> None:
        self.emu = emulator
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding="utf-8",
            validate_inbound_headers=emulator.strict_http2,
            normalize_inbound_headers=emulator.strict_http2,
            # Our own answers are well-formed: checking them again only costs time.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = _Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.served = 0
        self.closing = False
        self.number = 0
        self.auth = ConnectionAuth(None)
        self.limited = False
        # While a read is handled, answers collect in h2's buffer: one TLS write for them all.
        self.receiving = False

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport instance: uvloop's
        # (clarion emulate runs on it) subclasses its own base.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        # aioapns offers no ALPN at all and Apple still talks HTTP/2 to it: so does the emulator.
        if ssl_object is None or ssl_object.selected_alpn_protocol() not in ("h2", None):
            transport.abort()
            return
        self.emu.connection_opened(self)
        self.emu.connection_count += 1
        self.number = self.emu.connection_count
        self.auth = ConnectionAuth(_certificate_uid(ssl_object.getpeercert()))
        streams = self.emu.max_concurrent_streams
        # APNs allows one stream on a token-auth connection until a request with a valid token.
        self.limited = (
            self.emu.single_stream_until_authenticated and self.auth.certificate_topic is None
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1 if self.limited else streams
            },
        )
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.emu.connection_closed(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.receiving = True
        try:
            self.handle_data(data)
        finally:
            self.receiving = False

    def handle_data(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                # header_encoding="utf-8" makes every name and value a str.
                pairs = [(str(k), str(v)) for k, v in event.headers or ()]
                self.streams[event.stream_id] = (pairs, bytearray())
                if event.stream_ended is not None:
                    self.request_complete(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream[1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.streams:
                    self.request_complete(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.flush()
                self.abort()
                return
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- requests -----------------------------------------------------------------------------
    def request_complete(self, stream_id: int) -> None:
        header_list, body = self.streams.pop(stream_id)
        if self.closing:
            return  # after GOAWAY: not processed, the client must send it again elsewhere
        self.served += 1
        self.emu.request_count += 1
        if self.emu.take_drop(self.served):
            self.closing = True
            self.flush()  # the answers to the requests before it leave, as each did on its own
            self.abort()
            return
        token, headers, status, reason, extra = self.handle(header_list, bytes(body))
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        if self.emu.record or self.emu.on_receive is not None:
            push = ReceivedPush(
                token, headers, bytes(body), _json(body), status, reason, self.number
            )
            if self.emu.record:
                self.emu.received.append(push)
            if self.emu.on_receive is not None:
                self.emu.on_receive(push)
        goaway = self.emu.take_goaway(self.served)
        if goaway:
            self.closing = True
        delay = self.emu.faults.delay
        if delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self.respond, stream_id, apns_id, status, reason, extra, goaway)
        else:
            self.respond(stream_id, apns_id, status, reason, extra, goaway)

    def respond(
        self,
        stream_id: int,
        apns_id: str,
        status: int,
        reason: str | None,
        extra: dict[str, Any],
        goaway: bool,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        response_headers = [(":status", str(status)), ("apns-id", apns_id)]
        if self.emu.sandbox:
            response_headers.append(("apns-unique-id", str(uuid.uuid4())))
        retry_after = extra.pop("retry_after", None)
        if retry_after is not None:
            response_headers.append(("retry-after", str(retry_after)))
        try:
            if reason is None:
                self.conn.send_headers(stream_id, response_headers, end_stream=True)
            else:
                payload = json.dumps({"reason": reason, **extra}).encode()
                response_headers.append(("content-type", "application/json"))
                response_headers.append(("content-length", str(len(payload))))
                self.conn.send_headers(stream_id, response_headers)
                self.conn.send_data(stream_id, payload, end_stream=True)
            if goaway:
                self.conn.close_connection(
                    additional_data=b'{"reason":"Shutdown"}', last_stream_id=stream_id
                )
        except h2.exceptions.H2Error:
            return  # the client reset the stream meanwhile
        if goaway or not self.receiving:
            self.flush()
        if goaway and self.transport is not None:
            self.transport.close()

    def handle(
        self, header_list: list[tuple[str, str]], body: bytes
    ) -> tuple[str, dict[str, str], int, str | None, dict[str, Any]]:
        """Apple's checks, in Apple's order; returns (token, headers, status, reason, extra)."""
        headers: dict[str, str] = {}
        duplicate = False
        for name, value in header_list:
            if name in headers and name in _CHECKED_HEADERS:
                duplicate = True
            headers[name] = value
        path = headers.get(":path", "")
        token = path[len(_DEVICE_PATH) :] if path.startswith(_DEVICE_PATH) else ""
        try:
            self.check(headers, path, token, body, duplicate)
        except Rejection as rejected:
            return token, headers, rejected.status, rejected.reason, rejected.extra
        return token, headers, 200, None, {}

    def check(
        self, headers: dict[str, str], path: str, token: str, body: bytes, duplicate: bool
    ) -> None:
        emu = self.emu
        if headers.get(":method") != "POST":
            raise Rejection(405, "MethodNotAllowed")
        if not path.startswith(_DEVICE_PATH):
            raise Rejection(404, "BadPath")
        if not token:
            raise Rejection(400, "MissingDeviceToken")
        if duplicate:
            raise Rejection(400, "DuplicateHeaders")
        team_id = self.authenticate(headers.get("authorization"))
        topic = headers.get("apns-topic") or self.auth.certificate_topic
        if not topic:
            raise Rejection(400, "MissingTopic")
        if not emu.topic_allowed(topic, team_id):
            raise Rejection(400, "TopicDisallowed")
        cert_topic = self.auth.certificate_topic
        if team_id is None and cert_topic is not None and not topic.startswith(cert_topic):
            raise Rejection(400, "TopicDisallowed")
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            raise Rejection(400, "InvalidPushType")
        priority = headers.get("apns-priority")
        if priority is not None and (
            priority not in ("1", "5", "10") or (push_type == "background" and priority == "10")
        ):
            raise Rejection(400, "BadPriority")
        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID.fullmatch(apns_id):
            raise Rejection(400, "BadMessageId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise Rejection(400, "BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            raise Rejection(400, "BadCollapseId")
        if not _HEX.fullmatch(token):
            raise Rejection(400, "BadDeviceToken")
        if not body:
            raise Rejection(400, "PayloadEmpty")
        limit = MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES
        if len(body) > limit:
            raise Rejection(413, "PayloadTooLarge")
        fault = emu.injected_fault(token) or emu.token_state(token, topic)
        if fault is not None:
            raise fault

    def authenticate(self, authorization: str | None) -> str | None:
        """The team a provider token vouches for (None under certificate auth)."""
        auth = self.auth
        if not authorization:
            if auth.certificate_topic is not None:
                return None
            raise Rejection(403, "MissingProviderToken")
        scheme, _, jwt = authorization.partition(" ")
        if scheme.lower() != "bearer" or not jwt:
            raise Rejection(403, "InvalidProviderToken")
        if jwt == auth.token:
            issued_at, team_id = auth.issued_at, auth.team_id
        else:
            verdict = self.emu.verify_provider_token(jwt)
            if verdict.reason is not None:
                raise Rejection(403, verdict.reason)
            issued_at, team_id = verdict.issued_at, verdict.team_id
        now = self.emu.clock()
        if now - issued_at > MAX_TOKEN_AGE:
            raise Rejection(403, "ExpiredProviderToken")
        if issued_at > now + 60:
            raise Rejection(403, "InvalidProviderToken")
        if jwt != auth.token:
            if auth.team_id is not None and team_id != auth.team_id:
                raise Rejection(403, "InvalidProviderToken")  # one team per connection
            if auth.token is not None and (
                issued_at - auth.issued_at < self.emu.token_update_min_interval
            ):
                raise Rejection(429, "TooManyProviderTokenUpdates")
            auth.token, auth.issued_at, auth.team_id = jwt, issued_at, team_id
            if self.limited:
                self.limited = False
                self.conn.update_settings({_MAX_STREAMS: self.emu.max_concurrent_streams})
        return team_id


def _certificate_uid(peer: Any) -> str | None:
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "userId":
                return str(value)
    return None


def _json(body: bytes | bytearray) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
