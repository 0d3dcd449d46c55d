"""The sync tests' network (prefix `lsxc<run id>`): what it holds and how to reach it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from latscope.lab import netns
from latscope.sync.keys import SyncKeys

TOPOLOGY = Path(__file__).with_name("topology.yaml")
PREFIX = "lsxc" + os.environ["LSX_RUN_ID"]

# target name -> (host, address, what the path crosses)
TARGETS = {
    "h1-v4": ("h1", "10.92.1.2", "veth"),
    "h1-v6": ("h1", "fd92:1::2", "veth"),
    "h2-v4": ("h2", "10.92.2.2", "bridge"),
    "h2-v6": ("h2", "fd92:2::2", "bridge"),
    "h3-v4": ("h3", "10.92.4.2", "routed"),
    "h3-v6": ("h3", "fd92:4::2", "routed"),
}
PORT = 51111  # the responders' port
SYNC_IFACE_PEER = {"h1": "mgr", "h2": "br0", "h3": "r1"}


@dataclass
class SyncNet:
    net: netns.Net
    keys: SyncKeys
    responders: dict = field(default_factory=dict)   # host -> Responder

    def allow(self, host: str) -> list[str]:
        """The manager's source addresses toward host (what its responder must allow)."""
        return sorted({str(self.net.topology.source_addr("mgr", addr))
                       for h, addr, _ in TARGETS.values() if h == host})

    def exchange(self, payload: bytes, src: str = "10.92.1.1",
                 dst: str = "10.92.1.2") -> bytes | None:
        """Send one datagram from the manager's namespace with source ``src`` to a responder;
        its reply, or None when none came within 0.5 s."""
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with self.net.enter("mgr"):
            s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.bind((src, 0))
            s.settimeout(0.5)
            s.sendto(payload, (dst, PORT))
            try:
                return s.recv(2048)
            except TimeoutError:
                return None
        finally:
            s.close()
