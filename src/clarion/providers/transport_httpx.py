"""A ``Transport`` on httpx: portable and simple, used by tests and as a fallback.

It is not the fast path (see ``docs/architecture.md``: httpx is the slowest client measured);
``clarion.providers.transport.create_transport`` chooses the production client.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from clarion.providers.transport import HttpResponse, TransportError


class HttpxTransport:
    """A pooled keep-alive httpx client behind the ``Transport`` protocol."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_connections: int = 100,
        keepalive_expiry: float = 300.0,
        http2: bool = False,
        verify: bool | str = True,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=limits, http2=http2, verify=verify, trust_env=False
        )

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        try:
            response = await self._client.post(
                url,
                headers=headers,
                content=body,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportError(f"{type(exc).__name__} to {_origin(url)}", sent=False) from None
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__} from {_origin(url)}", sent=True) from None
        return HttpResponse(
            status=response.status_code,
            headers={name.lower(): value for name, value in response.headers.items()},
            body=response.content,
        )

    async def close(self) -> None:
        await self._client.aclose()


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
