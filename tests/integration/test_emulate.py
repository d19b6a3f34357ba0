"""`clarion emulate`: the printed settings and credential files really deliver a push."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from clarion.app import create_app
from clarion.core.services import open_services
from clarion.emulators.runner import Emulation, run
from tests.conftest import make_settings


async def test_emulated_credentials_and_settings_deliver_to_every_platform(tmp_path: Path) -> None:
    folder = tmp_path / "clarion-emulator"
    shown: list[str] = []
    ready: asyncio.Future[Emulation] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            folder,
            host="127.0.0.1",
            ports=(0, 0, 0),
            bundle="com.example.app",
            api="http://clarion.test",
            app_id="mobile-app",
            show=shown.append,
            ready=ready.set_result,
            stop=stop,
        )
    )
    emulation = await ready
    assert oct((folder / "AuthKey_emulator.p8").stat().st_mode & 0o777) == "0o600"
    overrides = {k.removeprefix("CLARION_").lower(): v for k, v in emulation.settings.items()}
    services = await open_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", **overrides)
    )
    app = create_app(services.settings, services=services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://clarion.test"
        ) as client:
            for command in emulation.commands:  # the printed curl commands, replayed
                method, url = command.split()[3:5]
                body = json.loads(Path(command.rsplit("@", 1)[1]).read_bytes())  # noqa: ASYNC240
                assert (await client.request(method, url, json=body)).status_code == 200
            for n, platform in enumerate(("ios", "android", "huawei")):
                device = {
                    "appId": "mobile-app",
                    "platform": platform,
                    "token": f"{n:02x}" * 32,
                    "activationId": f"act-{platform}",
                    "userId": "alice",
                }
                await client.post("/push/device/create", json={"requestObject": device})
            message = {"userId": "alice", "body": {"title": "Hello", "body": "emulated"}}
            answer = await client.post(
                "/push/message/send",
                json={"requestObject": {"appId": "mobile-app", "message": message}},
            )
            result = answer.json()["responseObject"]["result"]
            assert {p: r["sent"] for p, r in result.items()} == {
                "ios": 1,
                "android": 1,
                "huawei": 1,
            }
            await asyncio.sleep(0.5)
    finally:
        await services.close()
        stop.set()
        await task
    assert any(line.startswith("APNs 200") for line in shown)
    assert any(line.startswith("FCM") for line in shown)
    assert any(line.startswith("HMS") for line in shown)
