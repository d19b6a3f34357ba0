"""Calls made in the same turn of the event loop, sent as one.

A relay push or a synchronous PowerAuth send is one request with one or a few devices, and
many such requests are in flight at once: the relay's dedup claims and the store's reads are
batched, so their callers wake up together. Sent one by one, each paid the whole way from the
sender to the provider (credentials versions, pool keys, the dispatcher's gates and in-flight
slots, metrics, the provider's batch set-up) for one token. ``Together`` collects what its
callers submit until the event loop's current turn ends, then makes one call per key for all
of it, and hands each caller its own part of the answer. Nothing waits longer than that turn:
a caller alone is sent on the next turn, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # the result of one item


class _Pending(Generic[I, R]):
    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: list[I] = []
        # One future per caller, with how many of the items are its own.
        self.waiters: list[tuple[asyncio.Future[list[R]], int]] = []


class Together(Generic[K, I, R]):
    """``submit(key, items)`` answers ``call(key, all items of that key)``'s results for the
    caller's items, the call made once per key and turn of the event loop.

    ``call`` returns one result per item, in order. If it raises, every caller of that call
    gets the exception.
    """

    def __init__(self, call: Callable[[K, list[I]], Awaitable[list[R]]]) -> None:
        self._call = call
        self._pending: dict[K, _Pending[I, R]] = {}
        self._scheduled = False
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, items: Sequence[I]) -> list[R]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        done: asyncio.Future[list[R]] = loop.create_future()
        pending.items.extend(items)
        pending.waiters.append((done, len(items)))
        return await done

    def _flush(self) -> None:
        self._scheduled = False
        batches, self._pending = self._pending, {}
        loop = asyncio.get_running_loop()
        for key, pending in batches.items():
            task = loop.create_task(self._run(key, pending))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _run(self, key: K, pending: _Pending[I, R]) -> None:
        try:
            results = await self._call(key, pending.items)
        except BaseException as exc:
            for done, _ in pending.waiters:
                if not done.done():
                    if isinstance(exc, asyncio.CancelledError):
                        done.cancel()
                    else:
                        done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for done, count in pending.waiters:
            if not done.done():  # a caller cancelled meanwhile has no one to answer
                done.set_result(results[at : at + count])
            at += count

    async def drain(self) -> None:
        """Wait for the calls under way (before closing what they send through)."""
        while self._calls or self._scheduled:
            if self._calls:
                await asyncio.wait(list(self._calls))
            else:
                await asyncio.sleep(0)


class OneAtATime(Generic[K, I, R]):
    """``submit(key, item)`` answers ``call(key, items)``'s result for the caller's item, with
    at most one call in flight per key: what is submitted while a call runs waits for it to
    end and goes into the next call, with everything else submitted meanwhile (a group
    commit: one transaction, and one commit, for a burst of writes).

    ``call`` returns one result per item, in order. If it raises, every caller of that call
    gets the exception. At most ``max_items`` items go into one call.
    """

    def __init__(
        self, call: Callable[[K, list[I]], Awaitable[list[R]]], *, max_items: int = 256
    ) -> None:
        self._call = call
        self._max = max_items
        self._queues: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._tasks: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: I) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queues.setdefault(key, []).append((item, done))
        if key not in self._tasks:
            self._tasks[key] = loop.create_task(self._run(key))
        return await done

    async def _run(self, key: K) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while queue := self._queues.get(key):
                batch, self._queues[key] = queue[: self._max], queue[self._max :]
                try:
                    results = await self._call(key, [item for item, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():  # a caller cancelled meanwhile has no one to answer
                        done.set_result(result)
        except BaseException:  # cancelled (the loop is closing): nobody waits forever
            for _, done in [*batch, *self._queues.get(key, [])]:
                done.cancel()
            raise
        finally:
            self._queues.pop(key, None)
            del self._tasks[key]

    async def drain(self) -> None:
        """Wait for the calls under way and those queued behind them."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))
