"""CPU time and memory of process trees, read from ``/proc`` (Linux only).

A Celery prefork worker is a main process plus its pool children, so every figure here is summed
over the tree rooted at the child process we started. CPU counts ``utime + stime`` of each live
process plus ``cutime + cstime`` (children that already ended and were reaped), so a pool process
that was replaced still counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime -> indexes 11..14.
    return sum(int(x) for x in fields[11:15]) / _TICKS


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages split between the processes that share them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class TreeSample:
    cpu: float  # seconds
    rss: int  # bytes, summed over the tree (shared pages counted in every process)
    pss: int  # bytes, summed over the tree (shared pages split)
    processes: int


def sample(roots: Iterable[int]) -> TreeSample:
    cpu, rss, pss, n = 0.0, 0, 0, 0
    for root in roots:
        for pid in tree(root):
            cpu += cpu_seconds(pid)
            rss += rss_bytes(pid)
            pss += pss_bytes(pid)
            n += 1
    return TreeSample(cpu, rss, pss, n)


class LoadMeter:
    """CPU the whole machine used vs CPU this script and its children used: the rest is others'."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.machine = self._machine_busy()
        self.ours = sample([os.getpid()]).cpu

    @staticmethod
    def _machine_busy() -> float:
        with Path("/proc/stat").open() as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def foreign_cores(self) -> float:
        elapsed = time.monotonic() - self.started
        machine = self._machine_busy() - self.machine
        ours = sample([os.getpid()]).cpu - self.ours
        return max(0.0, machine - ours) / elapsed if elapsed > 0 else 0.0
