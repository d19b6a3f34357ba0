"""`clarion emulate`: the printed settings and credential files really deliver a push."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from clarion.app import create_app
from clarion.core.services import open_services
from clarion.emulators.runner import Emulation, run
from tests.conftest import make_settings


async def deliver_to_every_platform(
    tmp_path: Path, settings: dict[str, str], commands: list[str]
) -> None:
    """Start clarion with the printed settings, replay the printed credential uploads, and send
    one push to a device of each platform: each must be answered sent."""
    overrides = {k.removeprefix("CLARION_").lower(): v for k, v in settings.items()}
    services = await open_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", **overrides)
    )
    app = create_app(services.settings, services=services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080"
        ) as client:
            for command in commands:  # the printed curl commands, replayed
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
    finally:
        await services.close()


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
            api="http://127.0.0.1:8080",
            app_id="mobile-app",
            show=shown.append,
            ready=ready.set_result,
            stop=stop,
        )
    )
    emulation = await ready
    assert oct((folder / "AuthKey_emulator.p8").stat().st_mode & 0o777) == "0o600"
    try:
        await deliver_to_every_platform(tmp_path, emulation.settings, list(emulation.commands))
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
    assert any(line.startswith("APNs 200") for line in shown)
    assert any(line.startswith("FCM") for line in shown)
    assert any(line.startswith("HMS") for line in shown)


def _start_emulate(folder: Path, log: Path) -> subprocess.Popen[bytes]:
    ports = ["--apns-port", "0", "--fcm-port", "0", "--hms-port", "0"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clarion", "emulate", *ports],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_the_emulate_command_delivers_as_it_says(tmp_path: Path) -> None:
    """`clarion emulate` as a user runs it, in its own process (on uvloop, as every clarion
    command: the emulators once refused every connection there)."""
    log = tmp_path / "emulate.out"
    proc = _start_emulate(tmp_path, log)
    try:
        for _ in range(200):
            if "Ctrl-C stops" in log.read_text() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert "Ctrl-C stops" in log.read_text(), log.read_text()
        folder = tmp_path / "clarion-emulator"
        settings = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (folder / "clarion-emulated.env").read_text().splitlines()
            if line.startswith("export ")
        )
        script = (folder / "upload-credentials.sh").read_text()
        commands = [line for line in script.splitlines() if line.startswith("curl ")]
        await deliver_to_every_platform(tmp_path, settings, commands)
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
    shown = log.read_text()
    assert "Traceback" not in shown, shown
    for line in ("APNs 200", "FCM", "HMS"):
        assert f"\n{line}" in shown, shown
    assert status == 0
