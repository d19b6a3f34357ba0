"""A local APNs-like sink: nginx over HTTP/2 + TLS answering 200, for the benchmarks.

Started by the benchmarks in a temporary directory on a spare loopback port, with a certificate
from a throw-away CA; nothing leaves the machine. Install nginx with
``apt-get install -y nginx-light`` (Debian's package) if it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clarion.emulators.tls import CertificateAuthority

NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {{
    listen 127.0.0.1:{port} ssl{listen_http2};
    {http2_on}
    http2_max_concurrent_streams 1000;
    ssl_certificate {dir}/server.pem;
    ssl_certificate_key {dir}/server.key;
    # Echo apns-id as APNs does (aioapns matches answers to requests by it).
    location / {{ add_header apns-id $http_apns_id always; return 200; }}
  }}
}}
"""


@dataclass(frozen=True)
class Sink:
    url: str
    host: str
    port: int
    ca_file: str
    pid: int


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nginx_version(nginx: str) -> tuple[int, ...]:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0, 0, 0)


@contextmanager
def nginx_sink(workers: int) -> Iterator[Sink]:
    """Run nginx as an HTTP/2 + TLS sink answering 200 to everything."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        sys.exit("nginx is not installed: apt-get install -y nginx-light (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="clarion-bench-sink-") as directory:
        ca = CertificateAuthority("clarion bench CA")
        server = ca.issue_server(("localhost", "127.0.0.1"))
        Path(directory, "ca.pem").write_bytes(ca.cert_pem)
        Path(directory, "server.pem").write_bytes(server.cert_pem)
        Path(directory, "server.key").write_bytes(server.key_pem)
        port = spare_port()
        new_syntax = _nginx_version(nginx) >= (1, 25, 1)
        conf = NGINX_CONF.format(
            workers=workers,
            dir=directory,
            port=port,
            listen_http2="" if new_syntax else " http2",
            http2_on="http2 on;" if new_syntax else "",
        )
        Path(directory, "nginx.conf").write_text(conf)
        process = subprocess.Popen(
            [nginx, "-p", directory, "-c", f"{directory}/nginx.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        err = process.stderr.read().decode() if process.stderr else ""
                        sys.exit(f"nginx did not start: {err}")
                    time.sleep(0.05)
            yield Sink(
                f"https://127.0.0.1:{port}", "127.0.0.1", port, f"{directory}/ca.pem", process.pid
            )
        finally:
            process.terminate()
            process.wait(timeout=10)


def sink_cpu_seconds(master_pid: int) -> float:
    """CPU used by nginx's master and workers so far (to show the sink is not the limit)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == master_pid or ppid == master_pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
