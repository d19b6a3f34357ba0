"""``clarion serve --processes N``: N uvicorn processes, each accepting on a socket of its own.

uvicorn's own ``--workers`` binds one socket and every process accepts from it. A process
that wakes first takes every connection waiting, so the long-lived keep-alive connections of a
client's pool (or of a load generator) were split unevenly: measured on the 2-core machine with
``bench/send.py --processes 2`` (wrk, 32 connections), 24 connections on one process and 8 on
the other. The busy process set the latency: p99 went from 27 to 140 ms between identical runs.

Here each process gets its own listening socket, all bound to the address with
``SO_REUSEPORT``, and the kernel spreads new connections over them (by a hash of the client's
address and port). Every socket listens before its process starts, so connections made while
the processes start are spread as well. The supervisor (this process) keeps the sockets and
restarts a process that died after it had started serving: its replacement takes the same
socket, and the connections waiting in it; one that keeps dying soon after its start is
replaced ever more slowly. It stops everything when a process's first start ended before it
served, and on SIGTERM / SIGINT it asks every process to stop gracefully and waits for it. A
process whose supervisor is gone (killed with ``kill -9``) is sent SIGTERM by the kernel and
stops gracefully as well.

Where ``SO_REUSEPORT`` does not exist, ``serve`` uses uvicorn's ``--workers`` as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn

from clarion import runloop

log = logging.getLogger("clarion.serve")

# After SIGTERM, how long the supervisor waits for its processes before killing them: their own
# graceful stop (requests in flight, the job worker's grace) comes first.
STOP_SECONDS = 30.0
# A process that served for less than this before it ended is replaced after a delay, doubling
# from RESTART_DELAY up to RESTART_DELAY_MAX: a fault that kills every new process (a full disk,
# a bug) does not become a loop of process starts burning the CPU.
SHORT_LIFE_SECONDS = 10.0
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
_PR_SET_PDEATHSIG = 1
LISTEN_BACKLOG = 2048  # uvicorn's default; its server listens again with its own setting

multiprocessing.allow_connection_pickling()  # sockets go to the spawned processes
_spawn = multiprocessing.get_context("spawn")


class GracefulServer(uvicorn.Server):
    """uvicorn's server, ending with exit status 0 after a graceful SIGTERM / SIGINT: uvicorn
    raises the signal again once it has shut down, so supervisors saw a stop they asked for
    as death by signal 15 (exit status 143)."""

    def __init__(
        self, config: uvicorn.Config, *, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig in (signal.SIGTERM, signal.SIGINT) and sig in self._captured_signals:
            self._captured_signals.remove(sig)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # uvicorn names the address only when it binds the socket itself; here it is handed
        # one (bound before anything started), so say where clarion listens.
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on http://%s:%d (Ctrl-C to stop)", shown, port)
        if self.started and self._on_started is not None:
            self._on_started()


def uvicorn_config(app: object) -> uvicorn.Config:
    """The server settings of every ``clarion serve`` process. ``proxy_headers=False``:
    uvicorn would otherwise take X-Forwarded-For from any local peer as the client's address;
    clarion believes it only from ``CLARION_WC_TRUSTED_PROXIES``."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=True,
        server_header=False,
        proxy_headers=False,
    )


def can_share_port() -> bool:
    """True where the kernel balances connections over sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def shared_sockets(address: tuple[object, ...], family: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``address`` with ``SO_REUSEPORT``, listening.

    They listen before their processes start: the kernel spreads connections only over
    listening sockets, so a socket that listened once its own process had started left every
    connection made before then to the processes already serving (measured: a client that
    connected 32 times the moment the port answered had all 32 on one process). A connection
    now waits in its socket's queue until that process serves, a second or two at start: the
    port accepts connections before any process serves, as gunicorn's does."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _stop_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies; stop now if it already has."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the process outlives a killed supervisor
        log.warning("cannot ask to stop with the supervisor (prctl unavailable)")
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _process_main(sock: socket.socket, parent: int, ready: Connection) -> None:
    """One serving process: the application from the environment, on its own socket; it says
    on ``ready`` once it serves."""
    from clarion.app import app_from_environment

    _stop_with_parent(parent)
    app = app_from_environment()
    server = GracefulServer(uvicorn_config(app), on_started=lambda: ready.send_bytes(b"ready"))
    runloop.run(server.serve(sockets=[sock]))
    # As ``clarion serve`` itself: no interpreter teardown racing the HTTP client's threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class Supervisor:
    """Runs one serving process per socket, keeps them running, stops them together."""

    def __init__(
        self,
        sockets: list[socket.socket],
        *,
        target: Callable[[socket.socket, int, Connection], None] = _process_main,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self._sockets = sockets
        self._target = target
        self._stop_seconds = stop_seconds
        self._processes: list[SpawnProcess | None] = [None] * len(sockets)
        # Per process: the pipe it says "ready" on; per socket, whether a process on it served.
        self._pipes: list[Connection | None] = [None] * len(sockets)
        self._started = [0.0] * len(sockets)  # monotonic
        self._quick_deaths = [0] * len(sockets)  # in a row, each after a short life
        self._ever_served = [False] * len(sockets)
        self._due: list[float | None] = [None] * len(sockets)  # when to replace a dead one
        self._stopping = threading.Event()
        self.starts = 0

    def _start(self, index: int) -> None:
        reader, writer = _spawn.Pipe(duplex=False)
        process = _spawn.Process(
            target=self._target, args=(self._sockets[index], os.getpid(), writer), daemon=False
        )
        process.start()
        writer.close()  # the process has its own copy
        old = self._pipes[index]
        if old is not None:
            old.close()
        self._processes[index] = process
        self._pipes[index] = reader
        self._started[index] = time.monotonic()
        self._due[index] = None
        self.starts += 1

    def _read_ready(self, index: int) -> None:
        """Note whether the process on socket ``index`` said it serves."""
        pipe = self._pipes[index]
        if pipe is not None and pipe.poll():
            try:
                if pipe.recv_bytes() == b"ready":
                    self._ever_served[index] = True
            except (EOFError, OSError):  # it ended without a word
                pass

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process gracefully; ``run`` returns once they have."""
        self._stopping.set()

    def run(self, *, signals: bool = True) -> int:
        """Serve until SIGTERM / SIGINT (exit status 0) or a process that failed to start (1).
        ``signals=False``: leave the signal handlers alone (``stop()`` ends it)."""
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
        status = 0
        for index in range(len(self._sockets)):
            self._start(index)
        while not self._stopping.wait(0.2):
            for index, process in enumerate(self._processes):
                if process is None or process.is_alive():
                    continue
                due = self._due[index]
                if due is not None:  # dead, its replacement waiting for its time
                    if time.monotonic() >= due:
                        self._start(index)
                    continue
                self._read_ready(index)
                if not self._ever_served[index]:
                    # The first start failed (a bad setting, a database not there): starting
                    # it again would fail the same way. A replacement that fails to start
                    # (the database down a while) is retried below, after its delay.
                    log.error(
                        "serving process %s ended while starting (exit status %s): stopping",
                        process.pid,
                        process.exitcode,
                    )
                    status = 1
                    self._stopping.set()
                    break
                if time.monotonic() - self._started[index] < SHORT_LIFE_SECONDS:
                    self._quick_deaths[index] += 1
                else:
                    self._quick_deaths[index] = 0
                quick = self._quick_deaths[index]
                delay = min(RESTART_DELAY * 2 ** (quick - 1), RESTART_DELAY_MAX) if quick else 0.0
                log.warning(
                    "serving process %s ended (exit status %s): starting another in %.0f s",
                    process.pid,
                    process.exitcode,
                    delay,
                )
                self._due[index] = time.monotonic() + delay
        self._stop_all()
        return status

    def _stop_all(self) -> None:
        running = [p for p in self._processes if p is not None and p.is_alive()]
        for process in running:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_seconds
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("serving process %s did not stop in time: killed", process.pid)
                process.kill()
                process.join()
        for sock in self._sockets:
            sock.close()
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()
