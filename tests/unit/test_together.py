"""``Together``: what callers submit in one turn of the event loop goes out as one call."""

from __future__ import annotations

import asyncio

import pytest

from clarion.core.together import OneAtATime, Together


class Recorder:
    """A call that answers each item with ``item * 10`` and records what it was given."""

    def __init__(self, fail_for: str | None = None) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.fail_for = fail_for
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    async def __call__(self, key: str, items: list[int]) -> list[int]:
        self.calls.append((key, list(items)))
        self.entered.set()
        await self.release.wait()
        if key == self.fail_for:
            raise RuntimeError(f"provider down for {key}")
        return [item * 10 for item in items]


async def test_callers_of_one_turn_share_one_call_per_key_and_get_their_own_answers() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    answers = await asyncio.gather(
        together.submit("app-a", [1, 2]),
        together.submit("app-b", [3]),
        together.submit("app-a", [4]),
    )
    assert answers == [[10, 20], [30], [40]]
    assert sorted(call.calls) == [("app-a", [1, 2, 4]), ("app-b", [3])]


async def test_a_caller_in_a_later_turn_gets_a_call_of_its_own() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    assert await together.submit("app", [1]) == [10]
    assert await together.submit("app", [2]) == [20]
    assert call.calls == [("app", [1]), ("app", [2])]


async def test_nothing_submitted_makes_no_call() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    assert await together.submit("app", []) == []
    assert call.calls == []


async def test_a_failed_call_raises_in_each_of_its_callers_only() -> None:
    call = Recorder(fail_for="app-a")
    together: Together[str, int, int] = Together(call)
    answers = await asyncio.gather(
        together.submit("app-a", [1]),
        together.submit("app-a", [2]),
        together.submit("app-b", [3]),
        return_exceptions=True,
    )
    assert [str(a) if isinstance(a, Exception) else a for a in answers] == [
        "provider down for app-a",
        "provider down for app-a",
        [30],
    ]


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    call = Recorder()
    call.release.clear()
    together: Together[str, int, int] = Together(call)
    first = asyncio.create_task(together.submit("app", [1]))
    second = asyncio.create_task(together.submit("app", [2]))
    await call.entered.wait()
    first.cancel()
    call.release.set()
    assert await second == [20]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert call.calls == [("app", [1, 2])]


async def test_drain_waits_for_the_call_under_way() -> None:
    call = Recorder()
    call.release.clear()
    together: Together[str, int, int] = Together(call)
    caller = asyncio.create_task(together.submit("app", [1]))
    await call.entered.wait()
    drained = asyncio.create_task(together.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    call.release.set()
    await drained
    assert caller.done() and caller.result() == [10]


# --- OneAtATime: a group commit per key -----------------------------------------------------


async def test_what_comes_while_a_call_runs_goes_into_one_next_call() -> None:
    call = Recorder()
    call.release.clear()
    one: OneAtATime[str, int, int] = OneAtATime(call)
    first = asyncio.ensure_future(one.submit("tenant", 1))
    await call.entered.wait()
    later = [asyncio.ensure_future(one.submit("tenant", n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert call.calls == [("tenant", [1])]  # nothing more while the first call runs
    call.release.set()
    assert await first == 10 and [await f for f in later] == [20, 30, 40]
    assert call.calls == [("tenant", [1]), ("tenant", [2, 3, 4])]


async def test_keys_have_their_own_calls_and_a_batch_is_bounded() -> None:
    call = Recorder()
    one: OneAtATime[str, int, int] = OneAtATime(call, max_items=2)
    answers = await asyncio.gather(
        one.submit("a", 1), one.submit("b", 2), one.submit("a", 3), one.submit("a", 5)
    )
    assert answers == [10, 20, 30, 50]
    assert sorted(call.calls) == [("a", [1, 3]), ("a", [5]), ("b", [2])]


async def test_a_failed_call_fails_its_own_callers_and_the_next_call_still_runs() -> None:
    failing = {"n": 0}

    async def call(key: str, items: list[int]) -> list[int]:
        failing["n"] += 1
        await asyncio.sleep(0)
        if failing["n"] == 1:
            raise RuntimeError("database down")
        return [item * 10 for item in items]

    one: OneAtATime[str, int, int] = OneAtATime(call)
    first = asyncio.ensure_future(one.submit("t", 1))
    await asyncio.sleep(0)  # the first call has started: the next one queues behind it
    second = asyncio.ensure_future(one.submit("t", 2))
    with pytest.raises(RuntimeError, match="database down"):
        await first
    assert await second == 20


async def test_drain_waits_for_queued_calls_too() -> None:
    call = Recorder()
    call.release.clear()
    one: OneAtATime[str, int, int] = OneAtATime(call)
    futures = [asyncio.ensure_future(one.submit("t", n)) for n in (1, 2)]
    await call.entered.wait()
    futures.append(asyncio.ensure_future(one.submit("t", 3)))
    await asyncio.sleep(0)
    drained = asyncio.ensure_future(one.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    call.release.set()
    await drained
    assert all(f.done() for f in futures) and len(call.calls) == 2
