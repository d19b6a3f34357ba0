"""`clarion serve` as a real process: zero-config SQLite start, JSON logs, no secret in any log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clarion.store.db import head_revision
from tests.fake_powerauth import free_port
from tests.support import apns_p8, b64, key_fragments, service_account

CLARION = [sys.executable, "-m", "clarion"]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"clarion exited early with {proc.returncode}")
        try:
            if httpx.get(url + "/push/service/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("clarion did not become ready")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """clarion serve in an empty folder with no settings but JSON logs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["CLARION_LOG_JSON"] = "1"
    log = tmp_path / "clarion.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLARION, "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, log, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_zero_config_serve_creates_database_and_key_file(
    server: tuple[str, Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url, log, _ = server
    status = httpx.get(url + "/push/service/status").json()
    assert status["status"] == "OK" and status["responseObject"]["applicationName"] == "clarion"
    # It says where it listens (uvicorn does not, given a socket bound beforehand).
    messages = [json.loads(line).get("msg") for line in log.read_text().splitlines()]
    assert f"listening on {url} (Ctrl-C to stop)" in messages
    assert (tmp_path / "clarion.db").is_file()
    key_file = tmp_path / "clarion.db.key"
    assert key_file.is_file() and (key_file.stat().st_mode & 0o777) == 0o600
    metrics = httpx.get(url + "/metrics").text
    assert (
        'clarion_http_requests_total{method="GET",route="/push/service/status",status="200"}'
        in metrics
    )
    # /metrics and /docs under their own names, not "unmatched" with every unknown path.
    assert httpx.get(url + "/docs").status_code == 200
    metrics = httpx.get(url + "/metrics").text
    for route in ("/metrics", "/docs"):
        assert f'method="GET",route="{route}",status="200"' in metrics, route
    docs = httpx.get(url + "/openapi.json").json()
    create = docs["paths"]["/push/device/create"]["post"]["requestBody"]["content"]
    schema_ref = create["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "requestObject" in docs["components"]["schemas"][schema_ref]["properties"]


def test_logs_are_json_lines_and_never_contain_a_private_key(
    server: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, log, _ = server
    key, account = apns_p8(), service_account()
    client = httpx.Client(base_url=url)
    assert (
        client.post(
            "/admin/app/create", json={"requestObject": {"appId": "mobile-app"}}
        ).status_code
        == 200
    )
    ios = {
        "appId": "mobile-app",
        "bundle": "com.example",
        "keyId": "K",
        "teamId": "T",
        "privateKeyBase64": b64(key),
    }
    responses = [
        client.put("/admin/app/ios/update", json={"requestObject": ios}),
        client.put(
            "/admin/app/android/update",
            json={
                "requestObject": {
                    "appId": "mobile-app",
                    "projectId": "p",
                    "privateKeyBase64": b64(account),
                }
            },
        ),
        # Failures must not echo the secret either.
        client.put(
            "/admin/app/ios/update", json={"requestObject": {**ios, "appId": "missing-app"}}
        ),
        client.put("/admin/app/ios/update", json={"requestObject": {**ios, "keyId": 7}}),
        client.put(
            "/admin/app/android/update",
            json={
                "requestObject": {
                    "appId": "mobile-app",
                    "projectId": "p",
                    "privateKeyBase64": b64({**account, "type": "x"}),
                }
            },
        ),
        client.post("/admin/app/detail", json={"requestObject": {"appId": "mobile-app"}}),
        client.get("/admin/app/list"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 400, 400, 200, 200]
    time.sleep(0.2)
    lines = log.read_text().splitlines()
    assert lines, "the server logged nothing"
    for line in lines:
        json.loads(line)  # every line is one JSON object
    everything = log.read_text() + "".join(r.text for r in responses)
    fragments = key_fragments(key) + key_fragments(account["private_key"].encode())
    for fragment in fragments:
        assert fragment not in everything
    assert any('"ERROR_REQUEST"' in r.text for r in responses)


def test_serve_refuses_an_out_of_date_postgresql_schema(postgres_url: str, tmp_path: Path) -> None:
    from tests.conftest import _pg_admin, run_blocking

    name = f"clarion_empty_{os.getpid()}"
    run_blocking(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        env["CLARION_DATABASE_URL"] = postgres_url.rsplit("/", 1)[0] + "/" + name
        env["CLARION_SECRET_KEY"] = "a-long-enough-secret-key-for-tests"
        result = subprocess.run(
            [*CLARION, "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 1
        assert b"clarion migrate" in result.stderr
        migrated = subprocess.run(
            [*CLARION, "migrate"], cwd=tmp_path, env=env, capture_output=True, timeout=30
        )
        assert migrated.returncode == 0, migrated.stderr
        assert f"empty -> {head_revision()}".encode() in migrated.stdout
    finally:
        run_blocking(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_postgresql_without_a_secret_key_is_refused(postgres_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["CLARION_DATABASE_URL"] = postgres_url
    result = subprocess.run(
        [*CLARION, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"CLARION_SECRET_KEY" in result.stderr


def test_granian_server_answers_both_dialects_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`serve --server granian`: a supervisor and a worker process; SIGTERM stops both."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    log = tmp_path / "clarion.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLARION, "serve", "--port", str(port), "--server", "granian"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=40)
        register = {"client_id": "c1", "type": "noop", "token": "t1"}
        assert httpx.post(url + "/clients", json=register).json() == {"status": "OK"}
        push = {"id": "m1", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}
        assert httpx.post(url + "/clients/c1", json=push).json() == {"status": "OK"}
        assert httpx.get(url + "/health").text.startswith("OK, clarion")
        metrics = httpx.get(url + "/metrics").text
        assert 'route="/clients/{id}",status="200"' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):  # no worker process left behind serving the port
        httpx.get(url + "/health", timeout=2)
    assert "ready" in log.read_text()


def test_worker_runs_on_uvloop_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`clarion worker` alone: its JSON log names its event loop, it serves its metrics,
    SIGTERM ends it with 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["CLARION_LOG_JSON"] = "1"
    log = tmp_path / "worker.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLARION, "worker", "--metrics-port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 20
        while "worker started" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        # A worker's pushes are counted in its own process: it serves them itself.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "clarion_push_outcomes_total" in metrics.text
        # Gauges only a serve process refreshes from the database: a worker showed them as 0.
        assert "clarion_campaigns_in_progress" not in metrics.text
        assert "clarion_jobs" not in metrics.text
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=20)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    started = [r for r in records if r.get("msg") == "worker started"]
    [serving] = [r for r in records if str(r.get("msg", "")).startswith("worker metrics on")]
    assert serving["metrics_port"] == port
    assert started and started[0]["loop"] == "uvloop"
    assert any(r.get("msg") == "worker stopped" for r in records)
    # The signal is acknowledged when it comes, not only once the jobs were handed back.
    assert any(str(r.get("msg", "")).startswith("SIGTERM: stopping; the 0 jobs") for r in records)
    assert status == 0


def test_an_open_admin_api_beyond_loopback_is_warned_about(
    server: tuple[str, Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    _, quiet_log, _ = server  # 127.0.0.1, no admin token: nothing to warn about
    assert "admin API" not in quiet_log.read_text()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["CLARION_LOG_JSON"] = "1"
    folder = tmp_path / "open"
    folder.mkdir()
    log = folder / "clarion.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLARION, "serve", "--host", "0.0.0.0", "--port", str(port)],  # noqa: S104
            cwd=folder,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    warnings = [json.loads(line) for line in log.read_text().splitlines() if "admin API" in line]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "CLARION_ADMIN_TOKEN" in warnings[0]["msg"]


def test_single_process_serve_ends_with_0_after_sigterm(
    server: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    """uvicorn raised SIGTERM again after its graceful shutdown: exit status 143, which
    supervisors report as an abnormal exit."""
    url, log, proc = server
    assert httpx.get(url + "/health").status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, log.read_text()[-2000:]
    assert "Application shutdown complete" in log.read_text()


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    """It logged "ready" and started its job worker, then failed to bind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLARION, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stdout == ""  # no log line: nothing started
    assert not (tmp_path / "clarion.db").exists()  # nothing started, nothing created
