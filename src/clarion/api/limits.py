"""The request body size limit, answered 413 in the dialect's own format.

Without it a body of any size was read whole into memory before a handler could refuse it
(a 50 MB relay push answered 200, a 30 MB PowerAuth body was parsed before its 400).

A declared ``Content-Length`` over the limit is answered at once, without reading the body.
A body without one (chunked) is counted as it arrives: past the limit, the application is told
the client went away, whatever it answers is dropped, and the 413 is sent instead.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.api.powerauth.envelope import error
from clarion.api.walletconnect.errors import failed, owns_path

# WalletConnect bodies are small: a relay push's blob is at most 4,096 characters and the
# credential files of a tenant at most 64 KB each.
WALLETCONNECT_MAX_BODY = 1 << 20


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.powerauth_limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        walletconnect = owns_path(scope["path"])
        limit = body_limit(scope["path"], self.powerauth_limit)
        declared = content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(walletconnect, limit)(scope, receive, send)
            return
        if declared is not None or scope["method"] in ("GET", "HEAD"):
            # The server holds a body to its Content-Length, and no GET route reads one: only
            # a chunked body needs counting (and this layer costs nothing more on the rest).
            await self.app(scope, receive, send)
            return
        received = 0
        over = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the application's answer to a body it never got whole
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _too_large(walletconnect, limit)(scope, receive, send)


def body_limit(path: str, max_body_bytes: int) -> int:
    """The largest body a request to ``path`` may carry (``max_body_bytes``, or less for the
    WalletConnect dialect's paths)."""
    if owns_path(path):
        return min(max_body_bytes, WALLETCONNECT_MAX_BODY)
    return max_body_bytes


def content_length(scope: Scope) -> int | None:
    """The request's declared Content-Length, or None."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None


def _too_large(walletconnect: bool, limit: int) -> JSONResponse:
    if walletconnect:
        message = f"The request body is larger than {limit} bytes."
        return failed(413, fields=[("body", message, "body")])
    return error(413, "ERROR_REQUEST", f"Request body is larger than {limit} bytes.")
