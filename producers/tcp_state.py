"""The kernel's TCP state of the covered namespaces' sockets, read with sock_diag: struct
tcp_info as the kernel fills it, never re-derived. One NETLINK_SOCK_DIAG socket per
namespace, made inside it (a netlink socket keeps its namespace), reused every interval.

The dump is decoded here with struct rather than through pyroute2's DiagSocket: its request
machinery (an event loop run per request, every attribute decoded) cost 4.4 ms to read 4
sockets, about 0.45 % of a core at one read a second; this reads them in a few hundred µs
(docs/cpu-budget.md). Only the tcp_info extension is asked for; the cgroup id comes with
every message."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

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

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_INET_DIAG_INFO, _INET_DIAG_CGROUP_ID = 2, 21
_EXT_INFO = 1 << (_INET_DIAG_INFO - 1)
# every state but TIME_WAIT, CLOSE and LISTEN (bit n: TCP state n), as `ss` calls connected
_SS_CONN = sum(1 << s for s in (0, 1, 2, 3, 4, 5, 8, 9, 11))
_NLHDR = struct.Struct("=IHHII")
# the netlink header, then inet_diag_req_v2: family, protocol, ext, pad, states; its
# inet_diag_sockid (48 bytes) follows
_REQ = struct.Struct("=IHHIIBBBxI")
# inet_diag_msg: family, state, timer, retrans; sockid: sport, dport (network order), src,
# dst (16 bytes each), if, cookie; expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBBB2H16s16sI8xIIIII")
_MSG_PORTS = struct.Struct(">4xHH")
_RTA = struct.Struct("=HH")
_NOCOOKIE = b"\xff" * 8      # INET_DIAG_NOCOOKIE: any socket of the 4-tuple


LOOKUP_MAX = 64      # more sockets asked for than this: dumps are cheaper than lookups
Ends = tuple[int, int, tuple[str, int], tuple[str, int]]   # netns inode, 4|6, local, remote


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


_TI_READ = [(k, off, struct.Struct("<" + f)) for k, (off, f) in _TI.items()]


def parse_tcp_info(raw: bytes) -> dict[str, int]:
    """The fields of _TI the kernel sent (a shorter struct from an older kernel: fewer)."""
    n = len(raw)
    return {k: st.unpack_from(raw, off)[0] for k, off, st in _TI_READ if off + st.size <= n}


def _packed(addr: str) -> bytes:
    """An address as inet_diag_sockid holds it: 16 bytes, IPv4 in the first 4."""
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def _address(raw: bytes, family: int) -> tuple[int, str]:
    """A probe's view of an address: a v4-mapped IPv6 address is the IPv4 flow the packets
    carry (as the probes report)."""
    if family == socket.AF_INET:
        return 4, str(ipaddress.IPv4Address(raw[:4]))
    a = ipaddress.IPv6Address(raw)
    return (4, str(a.ipv4_mapped)) if a.ipv4_mapped else (6, str(a))


class _DiagDump:
    """One NETLINK_SOCK_DIAG socket: a dump of a family's connected TCP sockets, or the one
    socket of a 4-tuple (a hash lookup in the kernel, where a dump walks every bucket of the
    established table)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
        self.sock.bind((0, 0))
        self._seq = 0
        self._buf = bytearray(1 << 16)

    def dump(self, family: int, netns: int, wanted: set[int]) -> list[TcpSocket]:
        """Every connected socket of the family with a port in wanted (empty: all)."""
        return self._ask(family, _NLM_F_REQUEST | _NLM_F_DUMP, bytes(48), netns, wanted)

    def lookup(self, family: int, netns: int, local: tuple[str, int],
               remote: tuple[str, int]) -> TcpSocket | None:
        """The socket with these ends (an IPv4 one also finds a dual-stack socket's IPv4
        flow), None if there is none or it is not a full socket (TIME_WAIT: no tcp_info)."""
        sockid = (struct.pack(">HH", local[1], remote[1]) + _packed(local[0])
                  + _packed(remote[0]) + struct.pack("=I", 0) + _NOCOOKIE)   # any device
        try:
            found = self._ask(family, _NLM_F_REQUEST, sockid, netns, set())
        except FileNotFoundError:
            return None
        return found[0] if found else None

    def _ask(self, family: int, flags: int, sockid: bytes, netns: int,
             wanted: set[int]) -> list[TcpSocket]:
        self._seq += 1
        self.sock.send(_REQ.pack(_REQ.size + len(sockid), _SOCK_DIAG_BY_FAMILY, flags,
                                 self._seq, 0, family, socket.IPPROTO_TCP, _EXT_INFO,
                                 _SS_CONN) + sockid)
        out: list[TcpSocket] = []
        buf = self._buf
        while True:
            n = self.sock.recv_into(buf)
            off = 0
            while off + _NLHDR.size <= n:
                length, kind, _flags, seq, _pid = _NLHDR.unpack_from(buf, off)
                if length < _NLHDR.size or off + length > n:
                    raise OSError(f"sock_diag: a malformed netlink message ({length} bytes)")
                if seq == self._seq:
                    if kind == _NLMSG_DONE:
                        return out
                    if kind == _NLMSG_ERROR:
                        err = -struct.unpack_from("=i", buf, off + _NLHDR.size)[0]
                        if err:
                            raise OSError(err, f"sock_diag: {os.strerror(err)}")
                        return out      # an acknowledgement ends the answer
                    if kind == _SOCK_DIAG_BY_FAMILY:
                        s = self._socket(buf, off, length, netns, wanted)
                        if s is not None:
                            out.append(s)
                        if not flags & _NLM_F_DUMP:
                            return out  # a lookup's one answer
                off += (length + 3) & ~3

    @staticmethod
    def _socket(buf: bytearray, off: int, length: int, netns: int,
                wanted: set[int]) -> TcpSocket | None:
        at = off + _NLHDR.size
        sport, dport = _MSG_PORTS.unpack_from(buf, at)
        if wanted and sport not in wanted and dport not in wanted:
            return None
        fam, _st, _t, _r, _sp, _dp, src, dst, _if, _exp, _rq, _wq, _uid, inode = \
            _MSG.unpack_from(buf, at)
        info = cgroup = None
        a, end = at + _MSG.size, off + length
        while a + _RTA.size <= end:
            alen, atype = _RTA.unpack_from(buf, a)
            if alen < _RTA.size:
                break
            if atype == _INET_DIAG_INFO:
                info = bytes(buf[a + _RTA.size:a + alen])
            elif atype == _INET_DIAG_CGROUP_ID:
                cgroup = struct.unpack_from("=Q", buf, a + _RTA.size)[0]
            a += (alen + 3) & ~3
        if info is None:
            return None
        family, local = _address(src, fam)
        _, remote = _address(dst, fam)
        return TcpSocket(netns, family, (local, sport), (remote, dport), inode, cgroup,
                         parse_tcp_info(info))

    def close(self) -> None:
        self.sock.close()


class TcpStateReader:
    """The TCP sockets of the covered namespaces, found by their ends; close() releases the
    netlink sockets."""

    def __init__(self, netns: list[str | None], ports: list[int]) -> None:
        self.ports = set(ports)
        self._by_netns: dict[int, _DiagDump] = {}
        try:
            for ns in netns:
                with entered(ns):
                    d = _DiagDump()
                self._by_netns[inode_of(ns)] = d
        except BaseException:
            self.close()
            raise

    def find(self, ends: set[Ends]) -> list[TcpSocket]:
        """The sockets with these ends that exist: a lookup each, or, for more than
        LOOKUP_MAX, one dump per namespace and family (a dump walks the whole established
        table, which costs milliseconds however few sockets the namespace holds)."""
        if len(ends) > LOOKUP_MAX:
            return self._dumped(ends)
        out = []
        for netns, family, local, remote in ends:
            d = self._by_netns.get(netns)
            s = d and d.lookup(socket.AF_INET if family == 4 else socket.AF_INET6, netns,
                               local, remote)
            if s:
                out.append(s)
        return out

    def _dumped(self, ends: set[Ends]) -> list[TcpSocket]:
        out = []
        for netns in {e[0] for e in ends}:
            d = self._by_netns.get(netns)
            if d is None:
                continue
            v4 = any(e[0] == netns and e[1] == 4 for e in ends)
            # IPv4 flows of dual-stack sockets are in the IPv6 dump
            for fam in (socket.AF_INET, socket.AF_INET6) if v4 else (socket.AF_INET6,):
                out += [s for s in d.dump(fam, netns, self.ports)
                        if (netns, s.family, s.local, s.remote) in ends]
        return out

    def close(self) -> None:
        for d in self._by_netns.values():
            d.close()
        self._by_netns.clear()
