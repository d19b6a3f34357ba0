"""CPU per push of the APNs emulator, the bottleneck of the kill -9 campaign tests.

    .venv/bin/python bench/emulator.py              # 20,000 pushes
    .venv/bin/python bench/emulator.py --count 5000 --uvloop

The emulator serves from its own thread and event loop, as in ``tests/integration/
test_campaign_crash.py``; ``ApnsProvider`` (token auth, pyreqwest) sends it batches of 500
pushes from the main thread. Printed: pushes/s and the emulator thread's own CPU per push
(from ``/proc/self/task/<id>/stat``), which is what the tests wait on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time

from clarion.emulators.apns import ApnsEmulator
from clarion.providers.apns import create_apns_provider
from clarion.providers.base import ApnsCredentials, Notification, OutcomeKind

BUNDLE = "com.example.bench"
BATCH = 500


def thread_cpu_seconds(native_id: int) -> float:
    with open(f"/proc/self/task/{native_id}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmulatorThread:
    def __init__(self, use_uvloop: bool) -> None:
        self.emulator = ApnsEmulator(record=False, strict_http2=False)
        self.key = self.emulator.create_team_key("TEAM123456", "KEY1234567")
        self.emulator.register_bundle(BUNDLE)
        self.received = 0
        self.emulator.on_receive = self._count  # as the crash test counts per token
        if use_uvloop:
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.native_id = 0
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(30):
            raise SystemExit("the emulator did not start")

    def _count(self, _push: object) -> None:
        self.received += 1

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.emulator.start())
        self._ready.set()
        self.loop.run_forever()


async def drive(emu: EmulatorThread, count: int) -> tuple[float, float]:
    credentials = ApnsCredentials(
        bundle=BUNDLE,
        key_id="KEY1234567",
        team_id="TEAM123456",
        private_key_pem=emu.key,
        sandbox=False,
    )
    provider = create_apns_provider(
        credentials, base_url=emu.emulator.url, ca_file=emu.emulator.ca_file
    )
    notification = Notification(title="Balance", body="Your balance changed")
    try:
        await provider.send(notification, ["ab" * 32])  # connect and authenticate first
        cpu_before = thread_cpu_seconds(emu.native_id)
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            tokens = [f"{i:064x}" for i in range(start, min(count, start + BATCH))]
            outcomes = await provider.send(notification, tokens)
            bad = [o for o in outcomes if o.kind is not OutcomeKind.DELIVERED]
            if bad:
                raise SystemExit(f"not delivered: {bad[0]}")
        elapsed = time.perf_counter() - started
        return elapsed, thread_cpu_seconds(emu.native_id) - cpu_before
    finally:
        await provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--uvloop", action="store_true", help="run the emulator on uvloop")
    args = parser.parse_args()
    emu = EmulatorThread(args.uvloop)
    elapsed, cpu = asyncio.run(drive(emu, args.count))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"apns emulator ({loop}): {args.count:,} pushes in {elapsed:.2f} s = "
        f"{args.count / elapsed:,.0f}/s; emulator thread {cpu / args.count * 1e6:,.0f} us CPU "
        f"per push ({emu.received - 1:,} received)"
    )


if __name__ == "__main__":
    main()
