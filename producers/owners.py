"""Which process owns a socket, and what that process costs: command from /proc/<pid>/comm,
CPU % over the interval from /proc/<pid>/stat (utime + stime) and resident memory from
statm. Read from /proc directly: one file each, no dependency.

The pid itself comes from the probes for a socket whose calls they saw (the flow counters
keep the caller's tgid, flow_stats.bpf.h: a host pid, so the agent reads the host's /proc).
For the others (data written before the agent started), socket inode -> pid through
/proc/<pid>/fd, the only place the kernel says it: only inodes not seen before trigger a
walk of /proc, which reads every fd of every process."""

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


def _socket_fds(pid: str) -> list[tuple[int, int]]:
    """(inode, fd) of every socket the process holds."""
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.append((int(link[8:-1]), int(fd)))
    except OSError:
        pass
    return out


def _holds(pid: int, fd: int, inode: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
    except OSError:
        return False


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
    """Socket inodes to their processes, remembered between intervals: each by the fd it was
    found at, so checking that it is still there is one readlink, not a listing of every fd
    of its process. An inode no process was found to hold (an orphaned socket, a process
    gone) is looked for again after RETRY_S, not every interval: a walk of /proc reads every
    fd of every process on the host."""

    RETRY_S = 10.0

    def __init__(self) -> None:
        self._at: dict[int, tuple[int, int]] = {}         # inode -> (pid, fd)
        self._missing: dict[int, float] = {}              # inode -> when last looked for
        self._last: dict[int, tuple[int, float]] = {}    # pid -> (ticks, monotonic s)
        self.walks = 0

    def _walk(self, wanted: set[int]) -> None:
        self.walks += 1
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            for ino, fd in _socket_fds(pid):
                if ino in wanted:
                    self._at[ino] = (int(pid), fd)

    def pids(self, inodes: set[int]) -> dict[int, int]:
        """inode -> pid of those we can find (a socket no process holds has none)."""
        for i in [i for i in inodes if i in self._at and not _holds(*self._at[i], i)]:
            del self._at[i]
        now = time.monotonic()
        unknown = {i for i in inodes if i and i not in self._at
                   and now - self._missing.get(i, -self.RETRY_S) >= self.RETRY_S}
        if unknown:
            self._walk(unknown)
            for i in unknown - self._at.keys():
                self._missing[i] = now
        if len(self._at) > 100_000:
            self._at = {i: a for i, a in self._at.items() if i in inodes}
        self._missing = {i: t for i, t in self._missing.items()
                         if i in inodes and i not in self._at}
        return {i: self._at[i][0] for i in inodes if i in self._at}

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
