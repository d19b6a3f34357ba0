"""A server process settles its heap once started; an app started by tests does not."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from clarion.app import create_app
from clarion.heap import YOUNG_THRESHOLD
from tests.conftest import make_settings


@pytest.mark.parametrize("server_process", [True, False])
async def test_a_server_process_freezes_what_start_up_built(
    tmp_path: Path, server_process: bool
) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", run_worker=False)
    app = create_app(settings, server_process=server_process)
    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        async with app.router.lifespan_context(app):
            services = app.state.services
            # Frozen objects are out of every generation the collector walks.
            walked = any(obj is services for obj in gc.get_objects())
            assert walked is not server_process
            assert (gc.get_freeze_count() > 10_000) is server_process
            young = gc.get_threshold()[0]
            assert young == (YOUNG_THRESHOLD if server_process else thresholds[0])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
