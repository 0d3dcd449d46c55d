"""Build a topology (latscope.lab.topology) as network namespaces, and tear it down again.

``with build(topology, prefix="lsx") as net:`` creates one namespace ``{prefix}-{host}`` per
host, veth pairs ``{prefix}-{link index}{a|b}`` for links (created straight into their
namespaces, so nothing ever lands in the root namespace), bridges (named as in the file) in
their host's namespace, v4/v6 addresses without DAD, forwarding everywhere, the routes
``Topology.routes_for`` lists and tbf qdiscs. Everything is removed on exit, and on any
failure during the build. ``teardown(prefix)`` removes what a crashed run left behind.

pyroute2 forks helper children (to open sockets inside a namespace). A signal handler that
raises (SIGTERM -> KeyboardInterrupt) must check ``os.getpid()`` first, or the exception
unwinds the child through the caller's code; ``Net.close`` refuses to run in such a child.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as p2netns

from latscope import log
from latscope.bpf.clock import ClockInjection, monotonic_ns
from latscope.bpf.netns import NETNS_DIR, entered, inode_of, run_in_netns
from latscope.lab.topology import Flow, Topology
from latscope.procs import wait_for

LOG = log.get("netns")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")   # keeps {prefix}-{idx}{a|b} within 15 chars
IFA_F_NODAD = 0x02
T = TypeVar("T")

# Written in every namespace before any device exists, so new devices inherit the defaults.
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv6/conf/default/forwarding": "1",
    "net/ipv6/conf/all/accept_dad": "0",        # v6 addresses usable at once
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/default/accept_ra": "0",
    "net/ipv4/conf/all/rp_filter": "0",          # test paths may be asymmetric
    "net/ipv4/conf/default/rp_filter": "0",
}



class NetnsError(RuntimeError):
    """The topology could not be built (after the partial build was torn down)."""


def _write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)


# ---- reachability (ICMP echo from inside a namespace; no ping binary needed) ----------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(dst: str, timeout: float = 1.0) -> bool:
    """One ICMP echo from the calling thread's namespace; True when the reply arrives."""
    ip = ipaddress.ip_address(dst)
    v4 = ip.version == 4
    ident, seq = random.randrange(1, 0xFFFF), 1
    req_type, rep_type = (8, 0) if v4 else (128, 129)
    payload = b"latscope-reach"
    hdr = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
    if v4:   # the kernel fills the ICMPv6 checksum itself
        hdr = struct.pack("!BBHHH", req_type, 0, _checksum(hdr + payload), ident, seq)
    fam, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if v4 else (
        socket.AF_INET6, socket.IPPROTO_ICMPV6)
    deadline = time.monotonic() + timeout
    with socket.socket(fam, socket.SOCK_RAW, proto) as s:
        try:
            s.sendto(hdr + payload, (str(ip), 0))
        except OSError:
            return False   # no route / unreachable yet
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, peer = s.recvfrom(2048)
            except (TimeoutError, OSError):
                return False
            if v4:
                data = data[(data[0] & 0x0F) * 4:]
            if (len(data) >= 8 and data[0] == rep_type
                    and struct.unpack("!H", data[4:6])[0] == ident
                    and ipaddress.ip_address(peer[0].split("%")[0]) == ip):
                return True
    return False


# ---- the built network --------------------------------------------------------------------------

def ns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def veth_name(prefix: str, link_index: int, side: str) -> str:
    return f"{prefix}-{link_index}{side}"


def iface_name(topology: Topology, prefix: str, host: str, addr: str) -> str:
    """The device of ``host`` holding ``addr`` in a topology built with ``prefix`` (a link
    end's veth, or the host's own bridge): known from the file, without the built Net."""
    for f in topology.ifaces(host):
        if any(str(a.ip) == addr for a in f.addrs):
            return str(f.key) if f.side is None else veth_name(prefix, int(f.key), f.side)
    raise KeyError(f"{host} has no interface with address {addr}")


# The drift epoch of a built topology is written into every namespace it builds (the alias of
# its loopback device), so each command started later against that topology (agents, sync
# responders, the manager) reads the same epoch from the namespaces themselves.
EPOCH_ALIAS = "latscope epoch_ns="


def built_epoch(ns: str) -> int:
    """The drift epoch the lab stamped into namespace ``ns`` when it built it."""
    with IPRoute(netns=ns) as ipr:
        alias = ipr.get_links(ipr.link_lookup(ifname="lo")[0])[0].get_attr("IFLA_IFALIAS") or ""
    if not alias.startswith(EPOCH_ALIAS):
        raise NetnsError(f"namespace {ns}: no drift epoch (not built by `latscope topology up`)")
    return int(alias.removeprefix(EPOCH_ALIAS))


class Net:
    """A built topology. Use as a context manager; ``close()`` tears everything down."""

    def __init__(self, topology: Topology, prefix: str):
        self.topology = topology
        self.prefix = prefix
        self.epoch_ns = monotonic_ns()           # one epoch for every host's injected clock
        self._ifnames: dict[tuple[str, int | str], str] = {}
        self._devices: dict[str, list[tuple[int, str]]] = {}
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        # pyroute2 forks helper children; a signal handler that raises there would unwind
        # into our cleanup inside the child and remove the namespaces under the parent.
        self._owner_pid = os.getpid()

    # -- names and facts
    def ns_name(self, host: str) -> str:
        self.topology.host(host)
        return ns_name(self.prefix, host)

    def namespaces(self) -> dict[str, str]:
        return {h.name: self.ns_name(h.name) for h in self.topology.hosts}

    def netns_inode(self, host: str) -> int:
        """The namespace's inode: what BPF sees as ``net->ns.inum``."""
        return inode_of(self.ns_name(host))

    def ifname(self, host: str, link_or_bridge: int | str) -> str:
        """Device of ``host`` on a link (its index), on a bridge (its name, the bridge device
        itself in the bridge's host), or toward a peer host/bridge named by a link endpoint."""
        key = (host, link_or_bridge)
        if key in self._ifnames:
            return self._ifnames[key]
        if isinstance(link_or_bridge, str):
            peer = link_or_bridge
            matches = [i for i, lk in enumerate(self.topology.links) if {lk.a, lk.b} == {host, peer}]
            if not matches:   # a port of a bridge in this host's namespace toward the peer
                mine = {b.name for b in self.topology.bridges if b.host == host}
                matches = [i for i, lk in enumerate(self.topology.links)
                           if peer in (lk.a, lk.b) and {lk.a, lk.b} & mine]
            if len(matches) == 1:
                return self._ifnames[(host, matches[0])]
            if len(matches) > 1:
                raise KeyError(f"{host} has {len(matches)} links to {peer}: "
                               "name the link by its index")
        raise KeyError(f"{host} has no device on {link_or_bridge!r}")

    def path_devices(self, flow: Flow | str) -> list[tuple[str, list[str]]]:
        """Each host a flow's data packets cross with the devices they pass there, in order,
        e.g. [("h1", ["lsx-0a"]), ("h2", ["lsx-0b", "br0", "lsx-1b"]), ("c1", ["lsx-1a"])]."""
        t = self.topology
        f = t.flow(flow) if isinstance(flow, str) else flow
        return [(h.host, [self.ifname(h.host, k) for k in h.devices])
                for h in t.path(f.src, t.flow_dst_addr(f))]

    def devices(self, host: str) -> list[tuple[int, str]]:
        """(ifindex, ifname) of every device in the host's namespace, lo included."""
        return list(self._devices[host])

    def addr(self, host: str, family: int = 4) -> str:
        """The host's first address of ``family`` (§8 order), without prefix."""
        addrs = self.topology.addresses(host, family)
        if not addrs:
            raise KeyError(f"{host} has no IPv{family} address")
        return str(addrs[0].ip)

    def clock(self, host: str) -> ClockInjection:
        c = self.topology.clock(host)
        return ClockInjection(c.offset_ns, c.drift_ppm, self.epoch_ns)

    # -- running things inside
    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` inside the host's namespace (``ip netns exec`` execs it, so the
        Popen's pid is the command's). Still-running processes are stopped at teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns_name(host), *argv], **kw)
        self._procs.append(proc)
        return proc

    def run(self, host: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on a thread inside the host's namespace (netfilter links, XDP, sockets)."""
        return run_in_netns(self.ns_name(host), fn, *args, **kwargs)

    def enter(self, host: str) -> contextlib.AbstractContextManager[None]:
        """Move the calling thread into the host's namespace for a ``with`` block."""
        return entered(self.ns_name(host))

    def ipr(self, host: str) -> IPRoute:
        """A pyroute2 IPRoute bound to the host's namespace (close it, or use ``with``)."""
        return IPRoute(netns=self.ns_name(host))

    def wait_reachable(self, src_host: str, dst_addr: str, timeout: float = 5.0) -> float:
        """Ping ``dst_addr`` from ``src_host`` until it answers; returns seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if self.run(src_host, ping, str(dst_addr), max(0.05, min(0.5, left))):
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{dst_addr} not reachable from {src_host} "
                                   f"within {timeout:.1f}s")

    def wait_listening(self, host: str, port: int, server: subprocess.Popen | None = None,
                       timeout: float = 10.0) -> None:
        """Until a TCP socket listens on ``port`` in the host's namespace."""
        wait_listening(self.ns_name(host), port, server, timeout)

    def wait_all_reachable(self, timeout: float = 10.0) -> None:
        """Every flow's destination from its source, and every sync target from the manager."""
        t = self.topology
        for f in t.flows:
            self.wait_reachable(f.src, str(t.flow_dst_addr(f)), timeout)
        for addr in t.sync_targets().values():
            self.wait_reachable(t.manager.name, str(addr), timeout)

    # -- lifecycle
    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        _stop_processes(self._procs)
        left = teardown(self.prefix, hosts=[h.name for h in self.topology.hosts])
        if left:
            LOG.warning("teardown of %s left %s", self.prefix, left)


def _stop_processes(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    running = [p for p in procs if p.poll() is None]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            LOG.warning("pid %d ignored SIGTERM; killing it", p.pid)
            p.kill()
            p.wait()


def wait_listening(ns: str, port: int, server: subprocess.Popen | None = None,
                   timeout: float = 10.0) -> None:
    """Until a TCP socket listens on ``port`` in namespace ``ns`` (``ss -Hltn``): a server
    such as ``iperf3 -s`` gives no readiness signal, and a client started before its
    listen() is refused. Fails at once when ``server`` exits first."""
    def listening() -> bool:
        return bool(subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn",
                                    f"sport = :{port}"], capture_output=True, text=True
                                   ).stdout.strip())

    try:
        wait_for(listening, timeout, f"nothing listens on {ns}:{port}", interval=0.05,
                 alive=None if server is None else lambda: server.poll() is None)
    except RuntimeError:
        assert server is not None
        raise RuntimeError(f"{server.args!r} exited {server.returncode} before listening "
                           f"on {ns}:{port}") from None


def list_namespaces(prefix: str) -> list[str]:
    """Namespaces named ``{prefix}-*`` (ours, or a crashed run's)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(f"{prefix}-"))


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is /run/netns/NAME (they keep it alive unnamed)."""
    try:
        ino = os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    pids.append(int(entry))
    return sorted(pids)


def unshared(timeout: float = 5.0) -> subprocess.Popen:
    """A process alone in a new network namespace that has no name, as a container runtime
    makes one (``unshare --net``); returned once the namespace exists (unshare(2) runs just
    before its exec). Its namespace file is /proc/PID/ns/net; it goes when the process does."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    deadline = time.monotonic() + timeout
    while inode_of(f"/proc/{proc.pid}/ns/net") == inode_of(None):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise NetnsError("unshare --net did not make a namespace")
        time.sleep(0.01)
    return proc


def teardown(prefix: str, hosts: Sequence[str] | None = None, *,
             kill: bool = False) -> list[str]:
    """Remove the namespaces ``{prefix}-*`` (only those of ``hosts`` when given) and any
    root-namespace veth ``{prefix}-N[ab]``. Devices inside a namespace die with it.
    Processes still inside are reported, and SIGKILLed with ``kill=True`` (a crashed run's
    traffic, agents: started by whoever owns the prefix). Returns what could not be removed
    (empty when clean)."""
    names = list_namespaces(prefix)
    if hosts is not None:
        wanted = {ns_name(prefix, h) for h in hosts}
        names = [n for n in names if n in wanted]
    left: list[str] = []
    for name in names:
        pids = [p for p in namespace_pids(name) if p != os.getpid()]
        if pids and kill:
            LOG.warning("killing processes left in %s: %s", name, pids)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif pids:
            LOG.warning("processes %s still run in %s: the namespace lives on unnamed until "
                        "they exit", pids, name)
        try:
            p2netns.remove(name)
        except OSError as e:
            LOG.warning("cannot remove namespace %s: %s", name, e)
            left.append(name)
    pat = re.compile(rf"^{re.escape(prefix)}-\d+[ab]$")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get("IFLA_IFNAME")
            if name and pat.match(name):
                try:
                    ipr.link("del", index=link["index"])
                except Exception as e:
                    LOG.warning("cannot remove stray link %s: %s", name, e)
                    left.append(name)
    return left


def build(topology: Topology, prefix: str = "lsx") -> Net:
    """Create the topology's namespaces; on any failure everything created is removed."""
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"prefix {prefix!r}: expected a letter then up to 7 of a-z0-9 "
                         "(veth names must fit 15 characters)")
    existing = [n for n in list_namespaces(prefix)
                if n in {ns_name(prefix, h.name) for h in topology.hosts}]
    if existing:
        raise NetnsError(f"namespaces {existing} already exist (another run, or a crashed one: "
                         f"`latscope topology down --prefix {prefix}` removes them)")
    veth = re.compile(rf"^{re.escape(prefix)}-\d+[ab]$")
    clash = [b.name for b in topology.bridges if veth.match(b.name)]
    if clash:
        raise NetnsError(f"bridge names {clash} clash with this prefix's veth names "
                         f"({prefix}-<link><a|b>): rename the bridges or pick another prefix")
    net = Net(topology, prefix)
    try:
        _build(net)
    except BaseException as e:
        net.close()
        if isinstance(e, NetnsError | KeyboardInterrupt):
            raise
        raise NetnsError(f"building {topology.source} with prefix {prefix} failed "
                         f"(partial build removed): {e}") from e
    return net


def _build(net: Net) -> None:
    t, prefix = net.topology, net.prefix
    hosts = [h.name for h in t.hosts]
    LOG.info("building %d namespaces for %s (prefix %s)", len(hosts), t.source, prefix)
    iprs: dict[str, IPRoute] = {}
    try:
        for h in hosts:
            p2netns.create(ns_name(prefix, h))
            run_in_netns(ns_name(prefix, h), _write_sysctls, SYSCTLS)
            iprs[h] = IPRoute(netns=ns_name(prefix, h))
            lo = iprs[h].link_lookup(ifname="lo")[0]
            iprs[h].link("set", index=lo, state="up", IFLA_IFALIAS=f"{EPOCH_ALIAS}{net.epoch_ns}")
        for b in t.bridges:
            ipr = iprs[b.host]
            ipr.link("add", ifname=b.name, kind="bridge")
            idx = ipr.link_lookup(ifname=b.name)[0]
            _add_addrs(ipr, idx, b.addr)
            ipr.link("set", index=idx, state="up")
            net._ifnames[(b.host, b.name)] = b.name
        for i, link in enumerate(t.links):
            a_host, b_host = t.namespace_of(link.a), t.namespace_of(link.b)
            a_if, b_if = veth_name(prefix, i, "a"), veth_name(prefix, i, "b")
            iprs[a_host].link("add", ifname=a_if, kind="veth",
                              peer={"ifname": b_if, "net_ns_fd": ns_name(prefix, b_host)})
            for side, host, ifname in (("a", a_host, a_if), ("b", b_host, b_if)):
                endpoint, addrs, tbf = link.end(side)
                ipr = iprs[host]
                idx = ipr.link_lookup(ifname=ifname)[0]
                if t.is_bridge(endpoint):
                    ipr.link("set", index=idx, master=ipr.link_lookup(ifname=endpoint)[0])
                _add_addrs(ipr, idx, addrs)
                ipr.link("set", index=idx, state="up")
                if tbf is not None:
                    kw: dict[str, int] = {"rate": tbf.rate_bps // 8, "burst": tbf.burst_bytes}
                    if tbf.latency_us is not None:
                        kw["latency"] = tbf.latency_us
                    else:
                        kw["limit"] = int(tbf.limit_bytes or 0)
                    ipr.tc("add", "tbf", index=idx, handle="1:", **kw)
                net._ifnames[(host, i)] = ifname
                if not t.is_bridge(endpoint):
                    net._ifnames[(endpoint, i)] = ifname
        for h in hosts:
            for dst, via in t.routes_for(h):
                fam = socket.AF_INET if dst.version == 4 else socket.AF_INET6
                iprs[h].route("add", family=fam, dst=str(dst.network_address),
                              dst_len=dst.prefixlen, gateway=str(via))
        for h in hosts:
            net._devices[h] = sorted((lk["index"], lk.get("IFLA_IFNAME"))
                                     for lk in iprs[h].get_links())
    finally:
        for ipr in iprs.values():
            ipr.close()
    LOG.info("built %s: %s", t.source, ", ".join(net.namespaces().values()))


def _add_addrs(ipr: IPRoute, index: int, addrs: Sequence[Any]) -> None:
    for a in addrs:
        kw = {"IFA_FLAGS": IFA_F_NODAD} if a.version == 6 else {}
        ipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen, **kw)
