"""Load LatScope's probe objects, share one set of maps between them, configure and attach
them for a set of network namespaces. Used by the agent and by `latscope doctor`.

Point -> (object, program, hook). Netfilter points share one program attached per
namespace, family (IPv4/IPv6) and hook; the hook number tells the program which point it is.
"""

from __future__ import annotations

import errno
import json
import struct
import subprocess
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field

from latscope import log
from latscope.bpf import counters, libbpf
from latscope.bpf.clock import ClockInjection
from latscope.bpf.netns import entered
from latscope.producers import layout
from latscope.producers.sampling import effective_size, udp_modulus

_log = log.get("producers.probes")
SHARED_MAPS = ("events", "counters", "netns_filter")
XDP_HOOK = "xdp (native, generic where the driver has none) on every covered device"
# point -> (object, program, hook description)
POINT_HOOKS: dict[str, tuple[str, str, str]] = {
    "sock_send": ("sock", "sock_send", "tp_btf/tcp_sendmsg_locked+tp_btf/sock_send_length"),
    "tcp_tx": ("tcp_tx", "tcp_tx", "sockops:WRITE_HDR_OPT_CB (cgroup v2 root, 4 option bytes)"),
    "ip_out": ("netfilter", "ip_point", "netfilter:LOCAL_OUT"),
    "ip_post": ("netfilter", "ip_point", "netfilter:POST_ROUTING"),
    "dev_queue": ("dev", "dev_queue", "tp_btf/net_dev_queue"),
    "dev_xmit": ("dev", "dev_xmit", "tp_btf/net_dev_start_xmit"),
    "dev_rx": ("dev", "dev_rx", "tp_btf/netif_receive_skb"),
    "ip_pre": ("netfilter", "ip_point", "netfilter:PRE_ROUTING"),
    "ip_in": ("netfilter", "ip_point", "netfilter:LOCAL_IN"),
    "tcp_rx": ("tcp", "tcp_rx", "tp_btf/tcp_probe"),
    "sock_recv": ("sock", "sock_recv", "tp_btf/sock_recv_length"),
}
RETRANS_HOOK = ("tcp", "retrans", "tp_btf/tcp_retransmit_skb")
# Extra programs a point needs besides its own (sock_send's entry time).
HELPERS = {"sock_send": [("sock", "send_entry", "tp_btf/tcp_sendmsg_locked")]}
NF_HOOKS = {"ip_pre": libbpf.NF_INET_PRE_ROUTING, "ip_in": libbpf.NF_INET_LOCAL_IN,
            "ip_out": libbpf.NF_INET_LOCAL_OUT, "ip_post": libbpf.NF_INET_POST_ROUTING}
OBJECTS = ("sock", "tcp", "dev", "netfilter", "tcp_tx")
SO_NETNS_COOKIE = 71


def list_links(ns: str | None) -> list[dict]:
    """`ip -j -d link show` in a namespace (None: our own)."""
    pre = ["-n", ns] if ns else []
    out = subprocess.run(["ip", *pre, "-j", "-d", "link", "show"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted (sock_ops programs attach to its root)."""
    with open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    raise libbpf.BpfError(errno.ENOENT, "no cgroup v2 hierarchy mounted (tcp_tx needs one)")


def netns_cookie(ns: str | None) -> int:
    """The kernel's cookie of a namespace (what bpf_get_netns_cookie returns there)."""
    import socket
    with entered(ns) if ns else nullcontext():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]


def port_bitmap(ports: list[int]) -> bytes:
    """The probes' port allow-list: bit p of 65536 set when port p is allowed."""
    words = [0] * 2048
    for p in ports:
        if not 0 < p < 65536:
            raise ValueError(f"port {p}: expected 1..65535")
        words[p >> 5] |= 1 << (p & 31)
    return struct.pack("<2048I", *words)


def _pow2_at_least(n: int) -> int:
    return 1 << max(12, (n - 1).bit_length())


@dataclass
class Probes:
    """All probe objects of one agent; close() detaches everything."""

    netns: list[str | None]                  # namespace names (None: this process's own)
    sample_size: int = 72400
    ports: Iterable[int] = ()
    clock: ClockInjection = field(default_factory=ClockInjection)
    ring_buffer_bytes: int = 8 << 20
    points: Iterable[str] = tuple(POINT_HOOKS)
    xdp: bool = False                        # opt-in: the xdp point (see xdp.bpf.c)
    objects: dict[str, libbpf.BpfObject] = field(default_factory=dict)
    xdp_objects: dict[str | None, libbpf.BpfObject] = field(default_factory=dict)
    attached: dict[str, str] = field(default_factory=dict)     # point -> hook
    xdp_refused: dict[str, str] = field(default_factory=dict)  # "ns/dev" -> why
    xdp_generic: list[str] = field(default_factory=list)       # "ns/dev" in generic mode
    unavailable: dict[str, str] = field(default_factory=dict)  # point -> why not attached

    @property
    def ring_size(self) -> int:
        """The ring buffer's bytes: the kernel wants a power of two."""
        return _pow2_at_least(self.ring_buffer_bytes)

    def load(self) -> None:
        size = effective_size(self.sample_size)
        ports = sorted(set(self.ports))
        wanted_progs = {POINT_HOOKS[p][:2] for p in self.points} | {RETRANS_HOOK[:2]} | {
            h[:2] for p in self.points for h in HELPERS.get(p, [])}
        first: libbpf.BpfObject | None = None
        try:
            for name in OBJECTS:
                if name == "tcp_tx" and "tcp_tx" not in self.points:
                    continue
                obj = libbpf.BpfObject.build(name)
                self.objects[name] = obj
                for prog in obj.programs():
                    obj.set_autoload(prog, (name, prog) in wanted_progs)
                if name == "netfilter":
                    obj.set_program_type("ip_point", libbpf.PROG_TYPE_NETFILTER,
                                         libbpf.ATTACH_NETFILTER)
                for var, value in self._globals(size, ports):
                    obj.set_global(var, value)
                if first is None:
                    obj.set_max_entries("events", self.ring_size)
                    obj.load()
                    first = obj
                    for inode in {libbpf.netns_inode(ns) for ns in self.netns}:
                        obj.map("netns_filter").update(inode, b"\x01")
                elif name == "tcp_tx":
                    # The one point whose hook a kernel may refuse (sock_ops header options):
                    # without it, socket and TCP transmit stay one segment, as doctor says.
                    try:
                        for m in SHARED_MAPS:
                            obj.reuse_map(m, first.map(m).fd)
                        obj.load()
                    except libbpf.BpfError as e:
                        self.unavailable["tcp_tx"] = str(e)
                        _log.warning("tcp_tx not available (%s): socket and TCP transmit "
                                     "are reported as one segment", e)
                        obj.close()
                        del self.objects[name]
                        continue
                else:
                    for m in SHARED_MAPS:
                        obj.reuse_map(m, first.map(m).fd)
                    obj.load()
                if name == "tcp_tx":
                    for ns in self.netns:
                        obj.map("netns_cookies").update(
                            struct.pack("<Q", netns_cookie(ns)),
                            struct.pack("<I", libbpf.netns_inode(ns)))
            if self.xdp:
                assert first is not None
                for ns in self.netns:      # one object per namespace: it knows its inode
                    obj = libbpf.BpfObject.build("xdp")
                    self.xdp_objects[ns] = obj
                    for var, value in self._globals(size, ports):
                        obj.set_global(var, value)
                    obj.set_global("xdp_netns", libbpf.netns_inode(ns))
                    for m in SHARED_MAPS:
                        obj.reuse_map(m, first.map(m).fd)
                    obj.load()
        except BaseException:
            self.close()
            raise

    def _globals(self, size: int, ports: list[int]) -> list[tuple[str, int | bytes]]:
        return [("clock_offset_ns", self.clock.offset_ns),
                ("clock_drift_ppb", self.clock.drift_ppb),
                ("clock_epoch_ns", self.clock.epoch_ns),
                ("sample_size", size),
                # a quarter full: the agent also reads every poll interval on its own
                ("wakeup_bytes", self.ring_size // 4),
                ("udp_sample_mod", udp_modulus(self.sample_size)),
                ("ports_any", 0 if ports else 1),
                ("port_bits", port_bitmap(ports))]

    def attach(self) -> dict[str, str]:
        """Attach every wanted point (netfilter in each namespace); returns point -> hook."""
        try:
            done: set[tuple[str, str]] = set()
            for point in self.points:
                obj_name, prog, hook = POINT_HOOKS[point]
                obj = self.objects.get(obj_name)
                if point == "tcp_tx":
                    if obj_name not in self.objects:
                        continue
                    try:
                        self.objects[obj_name].attach_cgroup(prog, cgroup2_root())
                    except libbpf.BpfError as e:
                        self.unavailable["tcp_tx"] = str(e)
                        _log.warning("tcp_tx not attached (%s): socket and TCP transmit "
                                     "are reported as one segment", e)
                        continue
                elif point in NF_HOOKS:
                    for ns in self.netns:
                        with entered(ns) if ns else nullcontext():
                            for pf in (libbpf.NFPROTO_IPV4, libbpf.NFPROTO_IPV6):
                                obj.attach_netfilter(prog, pf, NF_HOOKS[point])
                else:
                    for o, pr, _ in [(obj_name, prog, hook), *HELPERS.get(point, [])]:
                        if (o, pr) not in done:
                            self.objects[o].attach(pr)
                            done.add((o, pr))
                self.attached[point] = hook
            self.objects[RETRANS_HOOK[0]].attach(RETRANS_HOOK[1])
            if self.xdp:
                self._attach_xdp()
        except BaseException:
            self.close()
            raise
        return dict(self.attached)

    def _attach_xdp(self) -> None:
        """XDP on every device (not lo) of every covered namespace, native where the driver
        has it, else generic. A device that already holds an XDP program (e.g. the sync
        responder's) keeps it: named in xdp_refused and logged; the others get the point."""
        n = 0
        for ns, obj in self.xdp_objects.items():
            with entered(ns) if ns else nullcontext():
                for dev in list_links(ns):
                    # Not lo; not a bridge: XDP on a bridge keeps its ports from getting
                    # any (EEXIST), and its ports' XDP sees the frames first anyway.
                    if dev["ifname"] == "lo" or \
                            dev.get("linkinfo", {}).get("info_kind") == "bridge":
                        continue
                    where = f"{ns or '(own)'}/{dev['ifname']}"
                    try:
                        try:
                            obj.attach_xdp("xdp_point", dev["ifindex"], libbpf.XDP_FLAGS_DRV_MODE)
                        except libbpf.BpfError as e:
                            if e.errno == errno.EBUSY:
                                raise
                            obj.attach_xdp("xdp_point", dev["ifindex"],
                                           libbpf.XDP_FLAGS_SKB_MODE)
                            self.xdp_generic.append(where)
                        n += 1
                    except libbpf.BpfError as e:
                        self.xdp_refused[where] = str(e)
                        _log.warning("xdp point not attached on %s: %s", where, e)
        if n:
            self.attached["xdp"] = XDP_HOOK

    @property
    def events_fd(self) -> int:
        return self.objects[OBJECTS[0]].map("events").fd

    def kernel_counters(self) -> dict[str, int]:
        return counters.read(self.objects[OBJECTS[0]].map("counters"), layout.COUNTERS)

    def all_objects(self) -> list[libbpf.BpfObject]:
        return [*self.objects.values(), *self.xdp_objects.values()]

    def close(self) -> None:
        for obj in self.all_objects():
            obj.close()
        self.objects.clear()
        self.xdp_objects.clear()
        self.attached.clear()

