"""CPU time and memory of benchmarked processes and their children (Linux /proc).

``clarion serve --server granian`` (and ``--processes N``) runs the application in child
processes of the one the benchmark started, so every figure here covers a process's whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parent(pid: int) -> int | None:
    """The parent of ``pid``; None if /proc does not show ``pid``."""
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far (0 for one gone)."""
    total = 0.0
    for root in pids:
        for pid in tree(root):
            fields = _stat(pid)
            if fields is not None:
                total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def server_cpu_seconds(root: int) -> float:
    """CPU of a server that forks a process per connection (PostgreSQL's postmaster): every
    live process of its tree, plus what the children it has reaped took (the root's
    ``cutime`` and ``cstime``), so a connection closed during the run still counts."""
    fields = _stat(root)
    if fields is None:
        return 0.0
    return cpu_seconds([root]) + (int(fields[13]) + int(fields[14])) / TICK


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes and their children, in MB."""
    total = 0
    for root in pids:
        for pid in tree(root):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total / 1024
