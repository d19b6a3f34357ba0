"""`clarion emulate`: the printed settings and credential files really deliver a push."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from clarion.app import create_app
from clarion.core.services import open_services
from clarion.emulators.runner import WC_TENANT, Emulation, run
from tests.conftest import make_settings


async def replay_form_upload(client: httpx.AsyncClient, command: str) -> httpx.Response:
    """A printed ``curl ... -F name=value -F name=@file`` or ``-d JSON`` command, replayed."""
    words = shlex.split(command)
    url = next(w for w in words if w.startswith("http"))
    if "-d" in words:
        return await client.post(url, json=json.loads(words[words.index("-d") + 1]))
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for flag, value in itertools.pairwise(words):
        if flag == "-F":
            name, _, given = value.partition("=")
            if given.startswith("@"):
                files[name] = (Path(given[1:]).name, Path(given[1:]).read_bytes())  # noqa: ASYNC240
            else:
                fields[name] = given
    return await client.post(url, data=fields, files=files)


async def push_through_walletconnect(client: httpx.AsyncClient, commands: list[str]) -> None:
    """The printed WalletConnect commands make a tenant whose APNs and FCM clients get pushes."""
    for command in commands:
        response = await replay_form_upload(client, command)
        assert response.status_code == 200, (command, response.text)
    tenant = "/" + WC_TENANT
    for push_type, token in (("apns", "ab" * 32), ("fcm", "emulated-fcm-token")):
        client_id = f"wallet-{push_type}"
        registered = await client.post(
            f"{tenant}/clients", json={"client_id": client_id, "type": push_type, "token": token}
        )
        assert registered.status_code == 200, registered.text
        blob = base64.b64encode(json.dumps({"title": "Hi", "body": "wc"}).encode()).decode()
        pushed = await client.post(
            f"{tenant}/clients/{client_id}",
            json={"id": f"m-{push_type}", "payload": {"topic": "t" * 64, "flags": 0, "blob": blob}},
        )
        assert pushed.status_code == 200, (push_type, pushed.text)


async def deliver_to_every_platform(
    tmp_path: Path,
    settings: dict[str, str],
    commands: list[str],
    wc_commands: list[str] | None = None,
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
                words = command.split()
                method, url = words[words.index("-X") + 1 : words.index("-X") + 3]
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
            if wc_commands is not None:
                await push_through_walletconnect(client, wc_commands)
    finally:
        await services.close()


def check_upload_script_sends_the_admin_token(folder: Path, tmp_path: Path) -> None:
    """The upload script sends the admin token when the shell has one (the production recipe
    sets CLARION_ADMIN_TOKEN; every upload was a 401 there), and no header otherwise."""
    fake = tmp_path / "bin"
    fake.mkdir()
    fake_curl = '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\necho ---\n'
    (fake / "curl").write_text(fake_curl)
    (fake / "curl").chmod(0o755)
    path = {"PATH": f"{fake}:/usr/bin:/bin"}
    script = str(folder / "upload-credentials.sh")
    token = {"CLARION_ADMIN_TOKEN": "t" * 24}
    with_token = subprocess.run(["sh", script], env={**path, **token}, capture_output=True)
    calls = with_token.stdout.decode().split("---\n")[:-1]
    assert len(calls) == 4
    assert all(f"authorization: Bearer {'t' * 24}\n" in call for call in calls), calls
    without = subprocess.run(["sh", script], env=path, capture_output=True).stdout.decode()
    assert "authorization" not in without and without.count("---") == 4
    assert "-u\n" not in without
    basic = {"CLARION_ADMIN_USERNAME": "ops", "CLARION_ADMIN_PASSWORD": "p" * 16}
    with_basic = subprocess.run(["sh", script], env={**path, **basic}, capture_output=True)
    calls = with_basic.stdout.decode().split("---\n")[:-1]
    assert len(calls) == 4
    assert all(f"-u\nops:{'p' * 16}\n" in call for call in calls), calls
    # Each answer ends with a newline of its own (they ran together on one line).
    assert all("-w\n\\n\n" in call for call in calls), calls


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
            api="http://127.0.0.1:18080",
            app_id="mobile-app",
            show=shown.append,
            ready=ready.set_result,
            stop=stop,
        )
    )
    emulation = await ready
    assert oct((folder / "AuthKey_emulator.p8").stat().st_mode & 0o777) == "0o600"
    # clarion listens where the printed commands call it (a newcomer's --api port was not).
    assert emulation.settings["CLARION_PORT"] == "18080"
    assert "CLARION_HOST" not in emulation.settings
    try:
        await deliver_to_every_platform(
            tmp_path,
            {k: v for k, v in emulation.settings.items() if k != "CLARION_PORT"},
            [c.replace(":18080", ":8080") for c in emulation.commands],
            [c.replace(":18080", ":8080") for c in emulation.wc_commands],
        )
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
    check_upload_script_sends_the_admin_token(folder, tmp_path)
    apns = [line for line in shown if line.startswith("APNs 200")]
    assert len(apns) == 2  # PowerAuth's push and WalletConnect's
    # The headers a sender wants to check, and the payload whole.
    assert "push-type=alert priority=10 " in apns[0], apns[0]
    assert apns[0].endswith('{"aps": {"alert": {"title": "Hello", "body": "emulated"}}}'), apns[0]
    assert len([line for line in shown if line.startswith("FCM")]) == 2
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
        assert settings["CLARION_PORT"] == "8080"  # where the commands call it
        scripts = [
            (folder / name).read_text().splitlines()
            for name in ("upload-credentials.sh", "upload-walletconnect-credentials.sh")
        ]
        commands, wc_commands = ([w for w in s if w.startswith("curl ")] for s in scripts)
        await deliver_to_every_platform(tmp_path, settings, commands, wc_commands)
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
    shown = log.read_text()
    assert "Traceback" not in shown, shown
    for line in ("APNs 200", "FCM", "HMS"):
        assert f"\n{line}" in shown, shown
    assert status == 0
