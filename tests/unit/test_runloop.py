"""clarion's processes run on uvloop (``clarion.runloop``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from clarion import runloop


async def _answer() -> tuple[str, int]:
    await asyncio.sleep(0)
    return runloop.loop_name(), 42


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is a dependency off Windows only")
def test_run_uses_uvloop_and_returns_the_result() -> None:
    assert runloop.run(_answer()) == ("uvloop", 42)


def test_without_uvloop_asyncio_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert runloop.run(_answer()) == ("asyncio", 42)
