"""The kernel's TCP state of the covered namespaces' sockets, read with sock_diag (pyroute2's
DiagSocket): struct tcp_info as the kernel fills it, never re-derived. One netlink socket per
namespace, made inside it (a netlink socket keeps its namespace), reused every interval."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pyroute2 import DiagSocket
from pyroute2.netlink.diag import SS_CONN

from latscope.bpf.netns import entered, inode_of

# struct tcp_info (include/uapi/linux/tcp.h: append-only, so offsets never move): the fields
# read here and their offsets. rcv_wnd came with 6.10; older kernels send less.
_TI = {"state": (0, "B"), "snd_mss": (16, "I"), "unacked": (24, "I"), "rtt": (68, "I"),
       "rttvar": (72, "I"), "snd_ssthresh": (76, "I"), "snd_cwnd": (80, "I"),
       "rcv_space": (96, "I"), "total_retrans": (100, "I"), "pacing_rate": (104, "Q"),
       "bytes_acked": (120, "Q"), "bytes_received": (128, "Q"), "notsent_bytes": (144, "I"),
       "min_rtt": (148, "I"), "delivery_rate": (160, "Q"), "busy_time": (168, "Q"),
       "rwnd_limited": (176, "Q"), "sndbuf_limited": (184, "Q"), "snd_wnd": (228, "I"),
       "rcv_wnd": (232, "I")}
TCP_STATES = ("", "established", "syn_sent", "syn_recv", "fin_wait1", "fin_wait2", "time_wait",
              "close", "close_wait", "last_ack", "listen", "closing")


@dataclass(frozen=True)
class TcpSocket:
    """One connected TCP socket: its ends and its tcp_info fields (name -> value)."""

    netns: int
    family: int          # 4 or 6
    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int
    cgroup_id: int | None
    info: dict[str, int]


def parse_tcp_info(raw: bytes) -> dict[str, int]:
    """The fields of _TI the kernel sent (a shorter struct from an older kernel: fewer)."""
    return {k: struct.unpack_from("<" + f, raw, off)[0] for k, (off, f) in _TI.items()
            if off + struct.calcsize(f) <= len(raw)}


def _unmapped(addr: str) -> tuple[int, str]:
    """A v4-mapped IPv6 address is the IPv4 flow the packets carry (as the probes report)."""
    if addr.startswith("::ffff:") and "." in addr:
        return 4, addr[7:]
    return (6 if ":" in addr else 4), addr


class TcpStateReader:
    """sock_diag dumps of every covered namespace; close() releases the netlink sockets."""

    def __init__(self, netns: list[str | None], ports: list[int]) -> None:
        self.ports = set(ports)
        self._socks: list[tuple[int, DiagSocket]] = []
        try:
            for ns in netns:
                with entered(ns):
                    ds = DiagSocket()
                    ds.bind()
                self._socks.append((inode_of(ns), ds))
        except BaseException:
            self.close()
            raise

    def _wanted(self, sport: int, dport: int) -> bool:
        return not self.ports or sport in self.ports or dport in self.ports

    def read(self) -> list[TcpSocket]:
        out: list[TcpSocket] = []
        for inode, ds in self._socks:
            for fam in (socket.AF_INET, socket.AF_INET6):
                for m in ds.get_sock_stats(family=fam, states=SS_CONN, extensions=0xff):
                    sport, dport = m["idiag_sport"], m["idiag_dport"]
                    if not self._wanted(sport, dport):
                        continue
                    nla = m.get_attr("INET_DIAG_INFO")
                    if nla is None:
                        continue
                    raw = bytes(nla.data[nla.offset + 4:nla.offset + nla.length])
                    family, src = _unmapped(m["idiag_src"])
                    _, dst = _unmapped(m["idiag_dst"])
                    out.append(TcpSocket(inode, family, (src, sport), (dst, dport),
                                         m["idiag_inode"], m.get_attr("INET_DIAG_CGROUP_ID"),
                                         parse_tcp_info(raw)))
        return out

    def close(self) -> None:
        for _, ds in self._socks:
            ds.close()
        self._socks.clear()
