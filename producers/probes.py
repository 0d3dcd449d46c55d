"""Load LatScope's probe objects, share one set of maps between them, configure and attach
them for a set of network namespaces. Used by the agent and by `latscope doctor`.

Which hook serves a point is chosen here, at start-up: each point's candidates
(latscope.schemas.points, preferred first) are tried in order, and the first that loads and
attaches serves it; the others are recorded with the reason (forced off with --skip-hook,
or the kernel's error). A candidate is loaded as its own instance of its object with only its
programs (a kernel refusing one program then costs only that candidate), and every instance
reuses one set of shared maps. Netfilter points share one program attached per namespace,
family (IPv4/IPv6) and hook; the hook number tells the program which point it is.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from latscope import log
from latscope.bpf import counters, libbpf
from latscope.bpf.clock import ClockInjection
from latscope.bpf.netns import entered, inode_of, ip_json
from latscope.producers import layout
from latscope.producers.sampling import effective_size, udp_modulus
from latscope.schemas.points import (
    BY_NAME,
    DEFAULT_POINTS,
    DROP_HOOKS,
    RETRANS_HOOKS,
    SYSCALL_HOOKS,
    Hook,
)

_log = log.get("producers.probes")
SHARED_MAPS = ("events", "counters", "netns_filter", "flow_stats", "sampling", "agent_idle",
               "udp_call", "sock_wait")
_RB_DROPS = layout.COUNTERS.index("rb_drops")
MAPS_OBJECT = "dev"            # loaded with no program: owns the shared maps
RETRANS = "retransmit"         # the retransmission marker's key in choices/unavailable
DROPS = "drops"                # the flow counters' drop reasons (drops.bpf.c), same maps
XDP = BY_NAME["xdp"].hooks[0]
SO_NETNS_COOKIE = 71


@dataclass
class Choice:
    """The start-up walk over one point's candidates: the hook that serves it (None: none
    does), why each earlier candidate was passed over, and (doctor only) how the later ones
    would fare."""

    hook: Hook | None
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (hook, reason)
    fallbacks: list[tuple[str, str | None]] = field(default_factory=list)  # (hook, None=works)

    @property
    def reason(self) -> str | None:
        """Why no candidate serves the point (None when one does)."""
        if self.hook is not None:
            return None
        return "; ".join(f"{h}: {r}" for h, r in self.skipped) or "no hook candidate"


def _kprobes_present() -> bool:
    return Path("/sys/bus/event_source/devices/kprobe").exists() or any(
        Path(d, "kprobe_events").exists() for d in ("/sys/kernel/tracing",
                                                    "/sys/kernel/debug/tracing"))


def failure_reason(hook: Hook, e: libbpf.BpfError) -> str:
    """The kernel's error for a candidate, with what it means where that is known."""
    # libbpf.py's load error points at the verifier log, which doctor silences
    why = (e.strerror or str(e)).replace(" (the verifier log is above)", "")
    if hook.kind == "fentry" and e.errno == errno.EPERM:
        why += " (this kernel refuses fentry/fexit programs)"
    elif hook.kind == "kprobe" and e.errno == errno.ENOENT and not _kprobes_present():
        why += " (no kprobe PMU nor kprobe_events: kernel without CONFIG_KPROBES)"
    return why


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted (sock_ops programs attach to its root)."""
    with open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    raise libbpf.BpfError(errno.ENOENT, "no cgroup v2 hierarchy mounted (tcp_tx needs one)")


def netfilter_links(obj: libbpf.BpfObject, prog: str, hooknum: int,
                    namespaces: Iterable[str | None], priority: int = 0) -> Iterator[libbpf.Link]:
    """prog linked at one netfilter hook in each namespace, for IPv4 and IPv6 (a link sees
    only the namespace it was made in), each link yielded as it is made (so a caller that
    fails half-way knows what to undo). BPF hooks of one priority at one hook refuse each
    other (EBUSY): a second program beside an agent's takes another."""
    for ns in namespaces:
        for pf in (libbpf.NFPROTO_IPV4, libbpf.NFPROTO_IPV6):
            with entered(ns):      # left before the yield: the caller runs where it was
                link = obj.attach_netfilter(prog, pf, hooknum, priority)
            yield link


def netns_cookie(ns: str | None) -> int:
    """The kernel's cookie of a namespace (what bpf_get_netns_cookie returns there)."""
    import socket
    with entered(ns):
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


def netns_fast(inodes: list[int]) -> list[tuple[str, int | bytes]]:
    """The probes' namespace filter as constants (compared without a map lookup), when
    there are at most layout.NETNS_FAST namespaces; more, and the netns_filter map decides."""
    if len(inodes) > layout.NETNS_FAST:
        return [("netns_fast_n", 0xFFFFFFFF)]
    padded = [*inodes, *[0] * (layout.NETNS_FAST - len(inodes))]
    return [("netns_fast_n", len(inodes)),
            ("netns_fast", struct.pack(f"<{layout.NETNS_FAST}I", *padded))]


def _pow2_at_least(n: int) -> int:
    return 1 << max(12, (n - 1).bit_length())


def _instance_key(hook: Hook) -> str:
    """One loaded instance per object and program set (the netfilter points share one)."""
    return f"{hook.obj}:{'+'.join(hook.programs)}"


@dataclass
class Probes:
    """All probe objects of one agent; close() detaches everything.

    ``skip_hooks``: tokens forcing candidates off (a hook name, one of its parts such as
    ``tp_btf/net_dev_queue``, or a kind such as ``tp_btf``). ``dry``: doctor's walk — no
    namespace is covered (the namespace filter and sockops cookie map stay empty, so nothing
    is reported), and the candidates after the chosen one are tried too, then detached."""

    netns: list[str | None]                  # namespace names (None: this process's own)
    sample_size: int = 72400
    ports: Iterable[int] = ()
    clock: ClockInjection = field(default_factory=ClockInjection)
    ring_buffer_bytes: int = 8 << 20
    points: Iterable[str] = DEFAULT_POINTS
    xdp: bool = False                        # opt-in: the xdp point (see xdp.bpf.c)
    resend_mark: bool = False                # opt-in: tcp_tx's option bytes (tcp_tx.bpf.c)
    # opt-in: UDP's socket points, whose sys_enter hooks run at every system call on the host
    # (points.SYSCALL_HOOKS); doctor's walk (dry) tries them whatever this says
    udp_socket_points: bool = False
    skip_hooks: Iterable[str] = ()
    flow_stats: bool = True                  # the per-flow counters (flow_stats.bpf.h)
    dry: bool = False
    objects: dict[str, libbpf.BpfObject] = field(default_factory=dict)   # instance key -> obj
    xdp_objects: dict[str | None, libbpf.BpfObject] = field(default_factory=dict)
    attached: dict[str, str] = field(default_factory=dict)     # point -> hook
    choices: dict[str, Choice] = field(default_factory=dict)   # point (or RETRANS) -> walk
    xdp_refused: dict[str, str] = field(default_factory=dict)  # "ns/dev" -> why
    xdp_generic: list[str] = field(default_factory=list)       # "ns/dev" in generic mode
    unavailable: dict[str, str] = field(default_factory=dict)  # point -> why not attached
    _counters_map: libbpf.Map | None = field(default=None, init=False, repr=False)

    @property
    def ring_size(self) -> int:
        """The ring buffer's bytes: the kernel wants a power of two."""
        return _pow2_at_least(self.ring_buffer_bytes)

    def load(self) -> None:
        """The shared maps (ring buffer, counters, namespace filter), in an object loaded
        without programs; candidates load in attach(), where the walk needs them."""
        self._size = effective_size(self.sample_size)
        self._ports = sorted(set(self.ports))
        self._inodes = [] if self.dry else sorted({inode_of(ns) for ns in self.netns})
        self.skip_hooks = tuple(self.skip_hooks) + (
            () if self.udp_socket_points or self.dry else SYSCALL_HOOKS)
        try:
            owner = self._open(MAPS_OBJECT, ())
            owner.set_max_entries("events", self.ring_size)
            owner.load()
            self.objects["maps"] = owner
            for inode in self._inodes:
                owner.map("netns_filter").update(inode, b"\x01")
            self.set_sampling(self._size, udp_modulus(self.sample_size))
        except BaseException:
            self.close()
            raise

    def set_sampling(self, size: int, udp_mod: int) -> None:
        """What the probes sample from now on: TCP bytes b with b % size == 0, datagrams
        with hash % udp_mod == 0 (every probe reads the one shared value)."""
        self.objects["maps"].map("sampling").update(0, layout.SAMPLING.codec.pack(size, udp_mod))

    def set_idle(self, idle: bool) -> None:
        """Whether the agent is in a long sleep: the probes then wake it with the first
        record it has not read (common.bpf.h, agent_idle)."""
        self.objects["maps"].map("agent_idle").update(0, struct.pack("<I", int(idle)))

    def _open(self, name: str, programs: tuple[str, ...]) -> libbpf.BpfObject:
        obj = libbpf.BpfObject.build(name)
        try:
            for prog in obj.programs():
                obj.set_autoload(prog, prog in programs)
            if "ip_point" in programs:
                obj.set_program_type("ip_point", libbpf.PROG_TYPE_NETFILTER,
                                     libbpf.ATTACH_NETFILTER)
            for var, value in self._globals():
                obj.set_global(var, value)
        except BaseException:
            obj.close()
            raise
        return obj

    def _globals(self) -> list[tuple[str, int | bytes]]:
        return [("clock_offset_ns", self.clock.offset_ns),
                ("clock_drift_ppb", self.clock.drift_ppb),
                ("clock_epoch_ns", self.clock.epoch_ns),
                # a quarter full: the agent also reads every poll interval on its own
                ("wakeup_bytes", self.ring_size // 4),
                ("ports_any", 0 if self._ports else 1),
                *netns_fast(self._inodes),
                ("resend_mark", int(self.resend_mark)),
                ("port_bits", port_bitmap(self._ports)),
                ("flow_stats_on", int(self.flow_stats and not self.dry))]

    def _instance(self, hook: Hook) -> tuple[libbpf.BpfObject, bool]:
        """The loaded object instance of a candidate (shared by candidates with the same
        programs: the netfilter points); True when it was made now."""
        key = _instance_key(hook)
        if key in self.objects:
            return self.objects[key], False
        obj = self._open(hook.obj, hook.programs)
        try:
            owner = self.objects["maps"]
            for m in SHARED_MAPS:
                obj.reuse_map(m, owner.map(m).fd)
            obj.load()
            if hook.kind == "sockops" and not self.dry:
                for ns in self.netns:
                    obj.map("netns_cookies").update(
                        struct.pack("<Q", netns_cookie(ns)),
                        struct.pack("<I", inode_of(ns)))
        except BaseException:
            obj.close()
            raise
        self.objects[key] = obj
        return obj, True

    def _attach_hook(self, hook: Hook) -> list[libbpf.Link]:
        """Load (or reuse) the candidate's instance and attach its programs; on failure
        nothing of it stays attached or loaded."""
        obj, fresh = self._instance(hook)
        links: list[libbpf.Link] = []
        try:
            if hook.kind == "netfilter":
                hooknum = getattr(libbpf, f"NF_INET_{hook.nf_hook}")
                for link in netfilter_links(obj, hook.prog, hooknum, self.netns):
                    links.append(link)
            elif hook.kind == "sockops":
                links.append(obj.attach_cgroup(hook.prog, cgroup2_root()))
            else:
                for prog in (*hook.helpers, hook.prog):
                    links.append(obj.attach(prog))
        except BaseException:
            for link in links:
                link.detach()
                if link in obj.links:
                    obj.links.remove(link)
            if fresh:
                obj.close()
                del self.objects[_instance_key(hook)]
            raise
        return links

    def _walk(self, hooks: Iterable[Hook]) -> Choice:
        """Try the candidates in order; the first that loads and attaches serves."""
        choice = Choice(None)
        for hook in hooks:
            token = hook.skipped_by(self.skip_hooks)
            if token is not None:
                why: str | None = f"forced off (--skip-hook {token})"
            else:
                try:
                    links = self._attach_hook(hook)
                    why = None
                except libbpf.BpfError as e:
                    why = failure_reason(hook, e)
                else:
                    if choice.hook is not None:      # dry: a fallback that would work
                        for link in links:
                            link.detach()
            if choice.hook is None:
                if why is None:
                    choice.hook = hook
                    if not self.dry:
                        break
                else:
                    choice.skipped.append((hook.name, why))
            else:
                choice.fallbacks.append((hook.name, why))
        return choice

    def attach(self) -> dict[str, str]:
        """Serve every wanted point with the first candidate the kernel has (netfilter in
        each namespace); returns point -> hook."""
        try:
            for point in self.points:
                if point == "xdp":
                    continue
                self._serve(point, BY_NAME[point].hooks)
            self._serve(RETRANS, RETRANS_HOOKS)
            if self.flow_stats:      # per dropped packet; nothing to count without them
                self._serve(DROPS, DROP_HOOKS)
            if self.xdp:
                self._load_xdp()
                self._attach_xdp()
            if not self.attached and not self.dry:
                raise libbpf.BpfError(errno.ENOENT, "no point could be attached: " + "; ".join(
                    f"{p}: {r}" for p, r in self.unavailable.items()))
        except BaseException:
            self.close()
            raise
        return dict(self.attached)

    def _serve(self, point: str, hooks: Iterable[Hook]) -> None:
        """Walk one point's candidates; record and log the outcome. A point no candidate
        serves is left out (the agent runs with the others; status and doctor say why)."""
        choice = self.choices[point] = self._walk(hooks)
        if choice.hook is not None:
            if point not in (RETRANS, DROPS):     # not points: the grouper never waits
                self.attached[point] = choice.hook.name
            if choice.skipped and not self.dry:
                _log.info("%s served by %s (passed over: %s)", point, choice.hook.name,
                          "; ".join(f"{h}: {r}" for h, r in choice.skipped))
            return
        self.unavailable[point] = choice.reason or ""
        if self.dry:
            return
        if point == "tcp_tx":
            _log.warning("tcp_tx not available (%s): socket and TCP transmit are reported as "
                         "one segment", choice.reason)
        elif point == RETRANS:
            _log.warning("retransmissions not marked by the sender's TCP (%s): only repeated "
                         "points flag them", choice.reason)
        elif point == DROPS:
            _log.warning("drops not counted per flow (%s): flow stats carry no drops",
                         choice.reason)
        else:
            _log.warning("point %s not available: %s", point, choice.reason)

    def _load_xdp(self) -> None:
        """One xdp object per namespace: it knows its inode."""
        owner = self.objects["maps"]
        for ns in self.netns:
            obj = self._open(XDP.obj, XDP.programs)
            self.xdp_objects[ns] = obj
            obj.set_global("xdp_netns", inode_of(ns))
            for m in SHARED_MAPS:
                obj.reuse_map(m, owner.map(m).fd)
            obj.load()

    def _attach_xdp(self) -> None:
        """XDP on every device (not lo) of every covered namespace, native where the driver
        has it, else generic. A device that already holds an XDP program (e.g. the sync
        responder's) keeps it: named in xdp_refused and logged; the others get the point."""
        n = 0
        for ns, obj in self.xdp_objects.items():
            with entered(ns):
                for dev in ip_json(ns, "-d", "link", "show"):
                    # Not lo; not a bridge: XDP on a bridge keeps its ports from getting
                    # any (EEXIST), and its ports' XDP sees the frames first anyway.
                    if dev["ifname"] == "lo" or \
                            dev.get("linkinfo", {}).get("info_kind") == "bridge":
                        continue
                    where = f"{ns or '(own)'}/{dev['ifname']}"
                    try:
                        try:
                            obj.attach_xdp(XDP.prog, dev["ifindex"], libbpf.XDP_FLAGS_DRV_MODE)
                        except libbpf.BpfError as e:
                            if e.errno == errno.EBUSY:
                                raise
                            obj.attach_xdp(XDP.prog, dev["ifindex"], libbpf.XDP_FLAGS_SKB_MODE)
                            self.xdp_generic.append(where)
                        n += 1
                    except libbpf.BpfError as e:
                        self.xdp_refused[where] = str(e)
                        _log.warning("xdp point not attached on %s: %s", where, e)
        if n:
            self.attached["xdp"] = XDP.name
            self.choices["xdp"] = Choice(XDP)

    def skipped(self) -> dict[str, list[dict[str, str]]]:
        """Per point served by a fallback: the candidates passed over, and why."""
        return {p: [{"hook": h, "reason": r} for h, r in c.skipped]
                for p, c in self.choices.items() if c.hook is not None and c.skipped}

    @property
    def udp_reads(self) -> bool:
        """Does the hook serving sock_recv report UDP reads (schemas/points.py Hook.udp)?"""
        c = self.choices.get("sock_recv")
        return bool(c and c.hook and c.hook.udp)

    @property
    def flow_stats_map(self) -> libbpf.Map:
        return self.objects["maps"].map("flow_stats")

    @property
    def events_fd(self) -> int:
        return self.objects["maps"].map("events").fd

    def kernel_counters(self) -> dict[str, int]:
        return counters.read(self.objects["maps"].map("counters"), layout.COUNTERS)

    def ring_drops(self) -> int:
        """Events the ring buffer had no room for, so far (one counter slot; the map is
        looked up once: the agent asks after every batch)."""
        if self._counters_map is None:
            self._counters_map = self.objects["maps"].map("counters")
        return counters.total(self._counters_map, _RB_DROPS)

    def all_objects(self) -> list[libbpf.BpfObject]:
        return [*self.objects.values(), *self.xdp_objects.values()]

    def close(self) -> None:
        for obj in self.all_objects():
            obj.close()
        self.objects.clear()
        self._counters_map = None
        self.xdp_objects.clear()
        self.attached.clear()
