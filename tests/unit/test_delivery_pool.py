"""The provider pool: lazy building, rebuild on a credentials change, the token limiter."""

from __future__ import annotations

import asyncio

import pytest

from clarion.delivery import PoolClosed
from clarion.delivery.pool import TokenLimiter
from tests.unit.delivery_fixtures import KEY, NOTE, OTHER_KEY, ScriptedProvider, pool_of


async def test_concurrent_first_sends_to_one_key_build_one_provider() -> None:
    pool, factory = pool_of(ScriptedProvider(), ScriptedProvider())

    async def use() -> object:
        async with pool.provider(KEY, 1) as provider:
            await asyncio.sleep(0)
            return provider

    first, second = await asyncio.gather(use(), use())
    assert first is second
    assert len(factory.built) == 1


async def test_each_key_gets_its_own_provider() -> None:
    pool, factory = pool_of(ScriptedProvider(), ScriptedProvider())
    async with pool.provider(KEY, 1) as one, pool.provider(OTHER_KEY, 1) as other:
        assert one is not other
    assert [key for key, _ in factory.built] == [KEY, OTHER_KEY]


async def test_a_new_version_builds_a_new_provider_and_closes_the_old_after_its_sends() -> None:
    hold = asyncio.Event()
    old, new = ScriptedProvider(hold=hold), ScriptedProvider()
    pool, factory = pool_of(old, new)

    async def send_with_v1() -> None:
        async with pool.provider(KEY, "v1") as provider:
            await provider.send(NOTE, ["a"])

    in_flight = asyncio.create_task(send_with_v1())
    await asyncio.sleep(0.01)
    assert old.in_flight == 1

    async with pool.provider(KEY, "v2") as provider:
        assert provider is new
        assert not old.closed, "closed under an in-flight send"
    hold.set()
    await in_flight
    assert old.closed
    assert not new.closed
    assert len(factory.built) == 2


async def test_an_idle_provider_is_closed_as_soon_as_its_version_changes() -> None:
    old, new = ScriptedProvider(), ScriptedProvider()
    pool, _ = pool_of(old, new)
    async with pool.provider(KEY, 1):
        pass
    async with pool.provider(KEY, 2):
        assert old.closed


async def test_the_same_version_reuses_the_provider() -> None:
    pool, factory = pool_of(ScriptedProvider(), ScriptedProvider())
    for _ in range(3):
        async with pool.provider(KEY, 7):
            pass
    assert len(factory.built) == 1


async def test_a_failing_factory_is_asked_again_next_time() -> None:
    calls = 0
    provider = ScriptedProvider()

    async def flaky(key: object) -> ScriptedProvider:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database unreachable")
        return provider

    from clarion.delivery import ProviderPool

    pool = ProviderPool(flaky)
    with pytest.raises(OSError):
        async with pool.provider(KEY, 1):
            pass
    async with pool.provider(KEY, 1) as built:
        assert built is provider


async def test_close_all_closes_every_provider_and_refuses_new_use() -> None:
    one, two = ScriptedProvider(), ScriptedProvider()
    pool, _ = pool_of(one, two)
    async with pool.provider(KEY, 1), pool.provider(OTHER_KEY, 1):
        pass
    await pool.close_all()
    assert one.closed and two.closed
    with pytest.raises(PoolClosed):
        async with pool.provider(KEY, 1):
            pass


async def test_close_all_waits_for_a_send_in_flight() -> None:
    hold = asyncio.Event()
    provider = ScriptedProvider(hold=hold)
    pool, _ = pool_of(provider)

    async def send() -> None:
        async with pool.provider(KEY, 1) as p:
            await p.send(NOTE, ["a"])

    task = asyncio.create_task(send())
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(pool.close_all(grace=5.0))
    await asyncio.sleep(0.01)
    assert not provider.closed
    assert not closing.done()
    hold.set()
    await asyncio.gather(task, closing)
    assert provider.closed


async def test_limiter_never_exceeds_its_capacity_and_serves_in_order() -> None:
    limiter = TokenLimiter(10)
    order: list[int] = []
    peak = 0

    async def take(n: int, tag: int) -> None:
        nonlocal peak
        await limiter.acquire(n)
        order.append(tag)
        peak = max(peak, limiter.in_use)
        await asyncio.sleep(0)
        limiter.release(n)

    await asyncio.gather(*(take(n, i) for i, n in enumerate([6, 6, 3, 10, 1])))
    assert peak <= 10
    assert order == [0, 1, 2, 3, 4]
    assert limiter.in_use == 0


async def test_limiter_gives_back_the_place_of_a_cancelled_waiter() -> None:
    limiter = TokenLimiter(2)
    await limiter.acquire(2)
    waiter = asyncio.create_task(limiter.acquire(2))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release(2)
    await asyncio.wait_for(limiter.acquire(2), timeout=1)
    assert limiter.in_use == 2


def test_limiter_refuses_a_request_larger_than_its_capacity() -> None:
    with pytest.raises(ValueError):
        asyncio.run(TokenLimiter(3).acquire(4))
