"""Which process owns a socket, and what that process costs: socket inode -> pid through
/proc/<pid>/fd (the only place the kernel says it), command from /proc/<pid>/comm, CPU % over
the interval from /proc/<pid>/stat (utime + stime) and resident memory from statm. Read
from /proc directly: one file each, no dependency. Only inodes not seen before trigger a
walk of /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Owner:
    pid: int
    command: str
    cpu_percent: float | None    # % of one CPU since the last reading (first: since start)
    rss_bytes: int


def _socket_inodes(pid: str) -> list[int]:
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.append(int(link[8:-1]))
    except OSError:
        pass
    return out


def _cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime + stime, start time) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3 of stat(5)); utime is field 14, stime 15, starttime 22
    return int(fields[11]) + int(fields[12]), int(fields[19])


def _uptime_ticks() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) * _TICK


class Owners:
    """Socket inodes to their processes, remembered between intervals."""

    def __init__(self) -> None:
        self._pid_of: dict[int, int] = {}
        self._last: dict[int, tuple[int, float]] = {}    # pid -> (ticks, monotonic s)

    def _walk(self, wanted: set[int]) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            for ino in _socket_inodes(pid):
                if ino in wanted:
                    self._pid_of[ino] = int(pid)

    def pids(self, inodes: set[int]) -> dict[int, int]:
        """inode -> pid of those we can find (a socket no process holds has none)."""
        stale = [i for i, p in self._pid_of.items() if i in inodes and
                 i not in _socket_inodes(str(p))]
        for i in stale:
            del self._pid_of[i]
        unknown = {i for i in inodes if i and i not in self._pid_of}
        if unknown:
            self._walk(unknown)
        if len(self._pid_of) > 100_000:
            self._pid_of = {i: p for i, p in self._pid_of.items() if i in inodes}
        return {i: self._pid_of[i] for i in inodes if i in self._pid_of}

    def read(self, pids: set[int]) -> dict[int, Owner]:
        """Each process's figures now, read once per call however many sockets it holds (a
        second reading in the same pass would cover microseconds, not the interval); CPU %
        over the time since its last reading. Processes not asked for are forgotten."""
        out = {}
        for pid in pids:
            owner = self._owner(pid)
            if owner is not None:
                out[pid] = owner
        for pid in [p for p in self._last if p not in out]:
            del self._last[pid]
        return out

    def _owner(self, pid: int) -> Owner | None:
        ticks = _cpu_ticks(pid)
        if ticks is None:
            return None
        used, start = ticks
        now = time.monotonic()
        last = self._last.get(pid)
        if last is not None and now > last[1]:
            cpu = (used - last[0]) / _TICK / (now - last[1]) * 100
        else:
            alive = _uptime_ticks() - start
            cpu = used / alive * 100 if alive > 0 else None
        self._last[pid] = (used, now)
        try:
            with open(f"/proc/{pid}/comm") as f:
                command = f.read().strip()
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * _PAGE
        except OSError:
            return None
        return Owner(pid, command, None if cpu is None else round(cpu, 2), rss)
