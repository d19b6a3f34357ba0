"""The provider HTTP client's runtime: sized once per process, by ``transport_threads``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from clarion.providers.transport_reqwest import configure_runtime, runtime_threads

# Builds a transport in a fresh process, makes one request (to a closed port: the runtime starts
# all the same) and prints the names of the process's threads.
_PROBE = textwrap.dedent(
    """
    import asyncio, glob, os, sys
    from clarion.providers.transport import TransportError
    from clarion.providers.transport_reqwest import ReqwestTransport, configure_runtime
    if sys.argv[1] != "default":
        configure_runtime(int(sys.argv[1]))
    async def main():
        transport = ReqwestTransport(timeout=2)
        try:
            await transport.post("http://127.0.0.1:9/", {}, b"")
        except TransportError:
            pass
        await transport.close()
    asyncio.run(main())
    names = [open(p).read() for p in glob.glob("/proc/self/task/*/comm")]
    print(sum(name.startswith("pyreqwest-worke") for name in names), flush=True)
    os._exit(0)  # as the clarion command ends: the teardown races the runtime's threads
    """
)


def _worker_threads(arg: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, arg], capture_output=True, text=True, check=True, timeout=60
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_runtime_has_the_threads_asked_for() -> None:
    assert _worker_threads("default") == 1
    assert _worker_threads("1") == 1
    assert _worker_threads("0") == 0  # pyreqwest's single-threaded runtime: no worker pool


def test_the_size_is_fixed_once() -> None:
    current = runtime_threads()
    configure_runtime(current)  # the same size again: nothing to do
    with pytest.raises(ValueError, match="set once per process"):
        configure_runtime(1 - current)
    for wrong in (-1, 2):  # two or more threads: aborts at exit under CPython 3.11
        with pytest.raises(ValueError, match="must be 0 or 1"):
            configure_runtime(wrong)
    assert runtime_threads() == current
