"""The garbage collector in a long-running clarion process."""

from __future__ import annotations

import gc

# Allocations (minus deallocations) of container objects between two young collections.
# CPython's default is 700.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Move everything start-up built (modules, routes, models, compiled statements, pools)
    into the collector's permanent generation, where full collections no longer walk it.

    Without this, each full collection of a serving process walked every object start-up
    left (FastAPI, pydantic, SQLAlchemy and their models): 84 ms in the middle of a run, up
    to 113 ms, on the 2-core development machine, during which no request is answered. After
    it, a full collection walks only what was allocated since. Called once, when a server or
    worker process has started; what becomes garbage later is collected as before.

    The young generation's threshold goes from 700 to ``YOUNG_THRESHOLD``. A job holds a
    batch of thousands of messages at once; at 700, collections every few hundred allocations
    carried all of them into the older generations and made full collections walk them again
    and again. Measured with ``bench/send.py --db sqlite --messages 20000 --seconds 20``
    (2026-11-30, back to back): async 2,680-2,805 pushes/s at 700, 3,131-3,660 at 7,000,
    3,406-4,155 at 20,000. Cyclic garbage waits a little longer to be freed (most objects go
    when their last reference does, whatever the threshold)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
