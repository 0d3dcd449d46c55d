"""The TCP state reader against `ss`: loopback connections in this namespace (IPv4 from 127.0.0.2, IPv6,
and an IPv4 flow on a dual-stack IPv6 socket), each end found by a lookup and by the dump
path, and both hold to what `ss -tine` prints for the same sockets (inode, cwnd, mss)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator

import pytest

from latscope.bpf.netns import inode_of
from latscope.producers import tcp_state
from latscope.producers.tcp_state import TcpStateReader


@pytest.fixture
def conns() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    v4 = socket.create_server(("127.0.0.1", 0))
    dual = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    for server, addr in ((v4, "127.0.0.1"), (dual, "::1"), (dual, "127.0.0.1")):
        # the IPv4 clients from another address: a lookup with its ends swapped finds nothing
        source = ("127.0.0.2", 0) if addr == "127.0.0.1" else None
        c = socket.create_connection((addr, server.getsockname()[1]), source_address=source)
        s, _ = server.accept()
        socks += [c, s]
    socks[0].sendall(b"x" * 300_000)      # one socket with data in flight or acknowledged
    yield socks
    for s in [*socks, v4, dual]:
        s.close()


def _ends(s: socket.socket) -> tuple[int, int, tuple[str, int], tuple[str, int]]:
    local, remote = s.getsockname()[:2], s.getpeername()[:2]
    unmap = [a.removeprefix("::ffff:") for a in (local[0], remote[0])]
    family = 6 if ":" in unmap[0] else 4
    return inode_of(None), family, (unmap[0], local[1]), (unmap[1], remote[1])


def _ss(port: int) -> dict[int, tuple[int, int]]:
    """inode -> (cwnd, mss) as `ss -tine` prints them for the sockets of a port."""
    out = subprocess.run(["ss", "-tinHe", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    got = {}
    for block in re.split(r"\n(?=\S)", out):
        ino = re.search(r"\bino:(\d+)", block)
        cwnd, mss = re.search(r"\bcwnd:(\d+)", block), re.search(r"\bmss:(\d+)", block)
        if ino and cwnd and mss:
            got[int(ino.group(1))] = (int(cwnd.group(1)), int(mss.group(1)))
    return got


@pytest.mark.parametrize("path", ["lookup", "dump"])
def test_every_end_is_found_and_agrees_with_ss(conns: list[socket.socket], path: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "dump":
        monkeypatch.setattr(tcp_state, "LOOKUP_MAX", 0)
    ends = {_ends(s) for s in conns}
    absent = (inode_of(None), 4, ("127.0.0.1", 1), ("127.0.0.1", 2))
    r = TcpStateReader([None], [])
    try:
        found = r.find(ends | {absent})
    finally:
        r.close()
    by_inode = {s.inode: s for s in found}
    want = {os.fstat(s.fileno()).st_ino: _ends(s) for s in conns}
    assert set(by_inode) == set(want), "one socket per end asked for, none for the absent one"
    for ino, (netns, family, local, remote) in want.items():
        got = by_inode[ino]
        assert (got.netns, got.family, got.local, got.remote) == (netns, family, local, remote)
    truth: dict[int, tuple[int, int]] = {}
    for port in {e[2][1] for e in want.values()} & {s.getsockname()[1] for s in conns[1::2]}:
        truth.update(_ss(port))
    assert set(truth) == set(want)
    for ino, (cwnd, mss) in truth.items():
        info = by_inode[ino].info
        assert (info["snd_cwnd"], info["snd_mss"]) == (cwnd, mss), ino
