"""The event loop of clarion's own processes: uvloop, as under ``clarion serve`` (uvicorn and
Granian both run on it), else asyncio's.

Measured with ``bench/delivery.py --loop``: the APNs provider needed 83 to 113 µs of CPU per
push on uvloop against 144 to 152 µs on asyncio's loop, back to back on the 2-core machine.
Every pyreqwest answer wakes the loop from the client's runtime thread, and each wake-up,
callback and task step costs less on uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop (uvloop if installed) and close it."""
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's loop does the same work, slower
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    """The running loop's implementation, for logs: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
