"""Providers pooled per (application, platform, environment), rebuilt when credentials change.

The pool never reads credentials itself: the caller gives a factory that builds a provider for a
key, and a credentials *version* with every use. A new version retires the old provider (closed
once its in-flight sends finish) and builds a new one, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from clarion.errors import ClarionError
from clarion.providers.base import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Which provider connection a send goes through."""

    application: str
    platform: str
    environment: str = "production"

    def __str__(self) -> str:
        return f"{self.application}/{self.platform}/{self.environment}"


ProviderFactory = Callable[[PoolKey], Awaitable[Provider]]


class CredentialsUnusable(ClarionError):
    """Raised by a provider factory when the stored credentials cannot build a provider.

    The delivery layer answers CREDENTIALS_REJECTED and suspends the key until the version
    changes. The message must name the problem, never contain the secret.
    """


class PoolClosed(ClarionError):
    """The pool was closed (the server is shutting down); nothing more is sent."""


class TokenLimiter:
    """A first-come-first-served semaphore counted in tokens: at most ``capacity`` in flight."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self, units: int) -> None:
        """Wait until ``units`` more tokens may be in flight, in arrival order."""
        if not 1 <= units <= self._capacity:
            raise ValueError(f"cannot acquire {units} of {self._capacity}")
        if not self._waiters and self._in_use + units <= self._capacity:
            self._in_use += units
            return
        waiter = (units, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(units)  # granted, but the caller is gone: give it back
            else:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
                self._wake()
            raise

    def release(self, units: int) -> None:
        """Return ``units`` acquired earlier."""
        self._in_use -= units
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            units, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self._in_use + units > self._capacity:
                return
            self._waiters.popleft()
            self._in_use += units
            future.set_result(None)


@dataclass(eq=False)
class _Entry:
    version: Hashable
    provider: Provider
    leases: int = 0
    retired: bool = False
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class ProviderPool:
    """Lazily built providers, one per key and credentials version, with a per-key token limit."""

    def __init__(self, factory: ProviderFactory, *, max_in_flight: int = 1000) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._factory = factory
        self._max_in_flight = max_in_flight
        self._entries: dict[PoolKey, _Entry] = {}
        self._retiring: set[_Entry] = set()
        self._building: dict[PoolKey, asyncio.Lock] = {}
        self._limiters: dict[PoolKey, TokenLimiter] = {}
        self._closed = False

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def closed(self) -> bool:
        return self._closed

    def limiter(self, key: PoolKey) -> TokenLimiter:
        """The in-flight token limit of ``key``."""
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = TokenLimiter(self._max_in_flight)
        return limiter

    @asynccontextmanager
    async def slots(self, key: PoolKey, tokens: int) -> AsyncIterator[None]:
        """Hold ``tokens`` of ``key``'s in-flight limit for the duration of the block."""
        limiter = self.limiter(key)
        await limiter.acquire(tokens)
        try:
            yield
        finally:
            limiter.release(tokens)

    @asynccontextmanager
    async def provider(self, key: PoolKey, version: Hashable) -> AsyncIterator[Provider]:
        """Use the provider of ``key`` at credentials ``version``, building it if needed."""
        entry = await self._checkout(key, version)
        try:
            yield entry.provider
        finally:
            entry.leases -= 1
            if entry.retired and entry.leases == 0:
                await self._close(entry)

    async def close_all(self, grace: float = 10.0) -> None:
        """Stop handing out providers and close every one, waiting up to ``grace`` s for sends."""
        self._closed = True
        for entry in list(self._entries.values()):
            await self._retire(entry)
        self._entries.clear()
        pending = list(self._retiring)
        if pending:
            waits = [asyncio.create_task(entry.closed.wait()) for entry in pending]
            _, late = await asyncio.wait(waits, timeout=grace)
            for task in late:
                task.cancel()
            for entry in pending:
                await self._close(entry)  # no-op for those already closed

    async def _checkout(self, key: PoolKey, version: Hashable) -> _Entry:
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            lock = self._building.setdefault(key, asyncio.Lock())
            async with lock:
                entry = await self._current(key, version)
        if self._closed:
            raise PoolClosed("the provider pool is closed")
        entry.leases += 1
        return entry

    async def _current(self, key: PoolKey, version: Hashable) -> _Entry:
        """The entry for ``key`` at ``version``; the caller holds the key's build lock."""
        if self._closed:
            raise PoolClosed("the provider pool is closed")
        entry = self._entries.get(key)
        if entry is not None and entry.version == version:
            return entry
        provider = await self._factory(key)
        if self._closed:  # closed while building: nobody will ever close this one but us
            await self._close(_Entry(version, provider))
            raise PoolClosed("the provider pool is closed")
        fresh = _Entry(version, provider)
        self._entries[key] = fresh
        log.info("provider %s built for %s", provider.name, key)
        if entry is not None:
            await self._retire(entry)
        return fresh

    async def _retire(self, entry: _Entry) -> None:
        entry.retired = True
        self._retiring.add(entry)
        if entry.leases == 0:
            await self._close(entry)

    async def _close(self, entry: _Entry) -> None:
        if entry.closing:
            return
        entry.closing = True
        self._retiring.discard(entry)
        try:
            await entry.provider.close()
        except Exception:
            log.exception("closing provider %s failed", entry.provider.name)
        finally:
            entry.closed.set()
