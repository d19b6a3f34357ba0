"""`clarion emulate`: APNs, FCM and HMS look-alikes on loopback, with credentials to use them.

It writes the credentials (an APNs team key, an FCM service account, an HMS client) and the CA
that signs the APNs emulator's certificate into a folder, prints the settings that point clarion
at the emulators and the commands that upload the credentials, then shows every push it gets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import shutil
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clarion.emulators.apns import ApnsEmulator
from clarion.emulators.fcm import FcmEmulator, make_service_account
from clarion.emulators.hms import HmsEmulator

TEAM_ID, KEY_ID = "EMULATOR01", "EMUKEY0001"
FCM_PROJECT, HMS_PROJECT, HMS_CLIENT = "emulated-project", "emulated-hms", "10000001"


# The apns-* headers a push's display names (the rest, authorization and apns-id, say nothing).
_SHOWN_HEADERS = ("apns-push-type", "apns-priority", "apns-expiration", "apns-collapse-id")
_SHOWN_PAYLOAD = 600  # characters of a push's JSON shown (APNs allows 4,096 bytes)
WC_TENANT = "emulated-wallet"


@dataclass(frozen=True)
class Emulation:
    settings: dict[str, str]
    commands: list[str]  # PowerAuth: create the application, upload its credentials
    wc_commands: list[str] = field(default_factory=list)  # WalletConnect: a tenant, likewise


def _api_settings(api: str) -> dict[str, str]:
    """CLARION_PORT (and CLARION_HOST) for clarion to listen where the commands will call it."""
    url = urllib.parse.urlsplit(api)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return {}
    found = {"CLARION_PORT": str(port)}
    if url.hostname and url.hostname not in ("127.0.0.1", "localhost"):
        found["CLARION_HOST"] = url.hostname
    return found


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def describe(
    apns: ApnsEmulator,
    fcm: FcmEmulator,
    hms: HmsEmulator,
    folder: Path,
    *,
    bundle: str,
    api: str,
    app_id: str,
) -> Emulation:
    """Create credentials in ``folder``; return the settings and the upload commands."""
    folder.mkdir(parents=True, exist_ok=True)
    key = apns.create_team_key(TEAM_ID, KEY_ID)
    apns.register_bundle(bundle)
    account = make_service_account(FCM_PROJECT, token_uri=fcm.token_url)
    fcm.register_service_account(account)
    secret = base64.urlsafe_b64encode(KEY_ID.encode() * 2).decode().rstrip("=")
    hms.register_client(HMS_CLIENT, secret, project_id=HMS_PROJECT)
    ca = folder / "apns-emulator-ca.pem"
    shutil.copyfile(apns.ca_file, ca)
    _write(folder, "AuthKey_emulator.p8", key)
    _write(folder, "service-account.json", json.dumps(account, indent=2).encode())
    settings = {
        "CLARION_APNS_PRODUCTION_URL": apns.url,
        "CLARION_APNS_SANDBOX_URL": apns.url,
        "CLARION_PROVIDER_CA_FILE": str(ca.resolve()),
        "CLARION_FCM_BASE_URL": fcm.url,
        # Every FCM access token from the emulator: WalletConnect tenants' service accounts
        # are otherwise refused unless they name Google's token endpoint.
        "CLARION_FCM_TOKEN_URL": fcm.token_url,
        "CLARION_HMS_PUSH_URL": hms.url,
        "CLARION_HMS_TOKEN_URL": hms.token_url,
        **_api_settings(api),
    }
    ios = {
        "appId": app_id,
        "bundle": bundle,
        "keyId": KEY_ID,
        "teamId": TEAM_ID,
        "environment": "production",
        "privateKeyBase64": base64.b64encode(key).decode(),
    }
    android = {
        "appId": app_id,
        "projectId": FCM_PROJECT,
        "privateKeyBase64": base64.b64encode(json.dumps(account).encode()).decode(),
    }
    huawei = {
        "appId": app_id,
        "projectId": HMS_PROJECT,
        "clientId": HMS_CLIENT,
        "clientSecret": secret,
    }

    def curl(method: str, path: str, name: str, body: dict[str, str]) -> str:
        request = _write(folder, f"{name}.json", json.dumps({"requestObject": body}).encode())
        headers = "-H 'content-type: application/json'"
        # With CLARION_ADMIN_TOKEN in the shell's environment (the production recipe), the
        # admin API wants it: the shell adds the header then, and only then.
        # The same for HTTP basic auth (CLARION_ADMIN_USERNAME / _PASSWORD).
        auth = (
            '${CLARION_ADMIN_TOKEN:+-H "authorization: Bearer $CLARION_ADMIN_TOKEN"}'
            ' ${CLARION_ADMIN_USERNAME:+-u "$CLARION_ADMIN_USERNAME:$CLARION_ADMIN_PASSWORD"}'
        )
        # An absolute path: the script and the printed commands work from any folder.
        request_file = shlex.quote(str(request.resolve()))
        # -w: each answer on a line of its own.
        return f"curl -s -w '\\n' -X {method} {api}{path} {headers} {auth} -d @{request_file}"

    commands = [
        curl("POST", "/admin/app/create", "create-app", {"appId": app_id}),
        curl("PUT", "/admin/app/ios/update", "ios", ios),
        curl("PUT", "/admin/app/android/update", "android", android),
        curl("PUT", "/admin/app/huawei/update", "huawei", huawei),
    ]
    key_file = shlex.quote(str((folder / "AuthKey_emulator.p8").resolve()))
    account_file = shlex.quote(str((folder / "service-account.json").resolve()))
    tenant = f"{api}/tenants/{WC_TENANT}"
    wc_commands = [
        f"curl -s -w '\\n' -X POST {api}/tenants -H 'content-type: application/json'"
        f' -d \'{{"id": "{WC_TENANT}"}}\'',
        f"curl -s -w '\\n' {tenant}/apns -F apns_topic={shlex.quote(bundle)}"
        f" -F apns_key_id={KEY_ID} -F apns_team_id={TEAM_ID} -F apns_pkcs8_pem=@{key_file}",
        f"curl -s -w '\\n' {tenant}/fcm_v1 -F credentials=@{account_file}",
    ]
    for name, lines in (
        ("upload-credentials.sh", commands),
        ("upload-walletconnect-credentials.sh", wc_commands),
    ):
        (folder / name).write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
        (folder / name).chmod(0o700)
    (folder / "clarion-emulated.env").write_text(
        "".join(f"export {k}={v}\n" for k, v in settings.items())
    )
    return Emulation(settings, commands, wc_commands)


def _shown(payload: object) -> str:
    text = json.dumps(payload, ensure_ascii=False)
    return text if len(text) <= _SHOWN_PAYLOAD else text[:_SHOWN_PAYLOAD] + "..."


async def run(
    folder: Path,
    *,
    host: str,
    ports: tuple[int, int, int],
    bundle: str,
    api: str,
    app_id: str,
    show: Callable[[str], None],
    ready: Callable[[Emulation], None],
    stop: asyncio.Event,
) -> None:
    """Run the three emulators until ``stop`` is set, reporting every push through ``show``."""
    apns = ApnsEmulator(host=host, port=ports[0])
    async with (
        apns,
        FcmEmulator(host=host, port=ports[1]) as fcm,
        HmsEmulator(host=host, port=ports[2]) as hms,
    ):
        apns.on_receive = lambda push: show(
            f"APNs {push.status} {push.reason or 'delivered'} token={push.token[:16]}... "
            + "".join(
                f"{name.removeprefix('apns-')}={push.headers[name]} "
                for name in _SHOWN_HEADERS
                if name in push.headers
            )
            + _shown(push.payload)
        )
        ready(describe(apns, fcm, hms, folder, bundle=bundle, api=api, app_id=app_id))
        seen_fcm = seen_hms = 0
        while not stop.is_set():
            for received in fcm.received[seen_fcm:]:
                show(
                    f"FCM  delivered token={str(received.token)[:16]}... "
                    + _shown({k: v for k, v in received.message.items() if k != "token"})
                )
            seen_fcm = len(fcm.received)
            for request in hms.received[seen_hms:]:
                show(
                    f"HMS  delivered to {len(request.delivered)} token(s) "
                    + _shown(request.message)
                )
            seen_hms = len(hms.received)
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass
