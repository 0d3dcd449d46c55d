"""Socket owners against the process's own account and ps: a child that holds two sockets
and spins half of each tenth of a second. Its inodes come from its own fstat, its CPU time
from its own clock (CLOCK_PROCESS_CPUTIME_ID), its command and RSS from ps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from latscope.producers.owners import Owners

CHILD = r"""
import os, socket, sys, time
a, b = socket.socket(), socket.socket(socket.AF_INET6)
print(os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino, flush=True)
os.set_blocking(0, False)
while True:
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        pass
    time.sleep(0.05)
    try:
        line = sys.stdin.readline()
    except (BlockingIOError, TypeError):
        line = ""
    if line == "q\n":
        break
    if line:
        print(time.process_time(), time.monotonic(), flush=True)
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen]:
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        yield p
    finally:
        p.kill()
        p.wait(5)


def _cpu_time(p: subprocess.Popen) -> tuple[float, float]:
    """(CPU s, monotonic s) by the child's own clocks."""
    assert p.stdin and p.stdout
    p.stdin.write("t\n")
    p.stdin.flush()
    cpu, at = p.stdout.readline().split()
    return float(cpu), float(at)


def _ps(pid: int) -> tuple[str, int, float]:
    out = subprocess.run(["ps", "-o", "comm=,rss=,%cpu=", "-p", str(pid)],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1]) * 1024, float(out[2])


def test_both_sockets_name_the_child_and_cpu_follows_its_own_clock(child) -> None:
    assert child.stdout
    inodes = {int(i) for i in child.stdout.readline().split()}
    owners = Owners()
    assert owners.pids(inodes) == {i: child.pid for i in inodes}
    time.sleep(1.0)
    first = owners.read({child.pid})[child.pid]
    command, rss, lifetime = _ps(child.pid)
    assert first.command == command
    assert abs(first.rss_bytes - rss) <= 0.1 * rss
    assert first.cpu_percent is not None and abs(first.cpu_percent - lifetime) <= 10, \
        (first, lifetime)

    c0, t0 = _cpu_time(child)
    owners.read({child.pid})
    time.sleep(1.5)
    second = owners.read({child.pid})[child.pid]
    c1, t1 = _cpu_time(child)
    own = (c1 - c0) / (t1 - t0) * 100
    assert second.cpu_percent is not None and abs(second.cpu_percent - own) <= 8, (second, own)



def test_a_closed_socket_loses_its_owner_and_is_not_walked_for_every_interval() -> None:
    """This process holds a socket, then closes it: its owner goes from us to nobody, checked
    by its fd; an inode nobody holds costs one walk of /proc per
    RETRY_S, not one per interval (a walk reads every fd of every process)."""
    s = socket.socket()
    mine = os.fstat(s.fileno()).st_ino
    owners = Owners()
    assert owners.pids({mine}) == {mine: os.getpid()}
    walks = owners.walks
    assert owners.pids({mine}) == {mine: os.getpid()}
    assert owners.walks == walks, "a known owner is checked by its fd, not by a walk"
    s.close()
    assert owners.pids({mine}) == {}
    walks = owners.walks
    for _ in range(5):
        assert owners.pids({mine}) == {}
    assert owners.walks == walks, "an inode nobody holds is not looked for every interval"
