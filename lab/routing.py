"""The topology's address and path rules (design §8): interfaces and L2 segments, the routes
each host gets, next hops by longest prefix, the path a packet takes, and the check that
every flow and sync target routes. Mixed into ``Topology``: the one place the lab's
forwarding is simulated, so the builder and the path checks cannot disagree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from latscope.lab.topology import Flow, IPAddress, IPInterface, IPNetwork, Topology

MAX_HOPS = 32


@dataclass(frozen=True)
class Iface:
    """An L3 interface of a host: one end of a link, or a bridge's own address."""
    host: str
    key: int | str               # link index, or bridge name
    side: str | None             # "a"/"b" for a link end, None for a bridge
    addrs: tuple[IPInterface, ...]
    segment: int                 # L2 segment id (a link, or a bridge with its ports)


@dataclass(frozen=True)
class Hop:
    """One host a packet crosses on its way (``Topology.path``)."""
    host: str
    l3: bool                     # False: only switched by a bridge in this host's namespace
    via: int | str | None = None  # link index or bridge name it arrives through; None at src
    # The devices it passes in this host, in order, as keys for ``Net.ifname(host, key)``:
    # link indexes (this host's end, or a bridge port here) and bridge names (the bridge
    # device: crossed only when the host itself sends or receives through its bridge).
    devices: tuple[int | str, ...] = ()


class Routing:
    """Methods of ``Topology`` (it supplies hosts, bridges, links, routes, flows)."""

    # ---- interfaces and segments -----------------------------------------------------------
    def _segments(self) -> dict[int | str, int]:
        """Union of links that share a bridge: each link/bridge key -> segment id."""
        parent: dict[int | str, int | str] = {}

        def find(x: int | str) -> int | str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for i, link in enumerate(self.links):
            find(i)
            for end in (link.a, link.b):
                if self.is_bridge(end):
                    parent[find(i)] = find("br:" + end)
        for b in self.bridges:
            find("br:" + b.name)
        roots: dict[int | str, int] = {}
        out: dict[int | str, int] = {}
        for key in list(parent):
            r = find(key)
            seg = roots.setdefault(r, len(roots))
            out[key if isinstance(key, int) else key[3:]] = seg
        return out

    def ifaces(self, host: str | None = None) -> list[Iface]:
        """L3 interfaces in §8 order: link ends in link order, then the host's bridges."""
        seg = self._segments()
        out: list[Iface] = []
        for i, link in enumerate(self.links):
            for side in ("a", "b"):
                name, addrs, _ = link.end(side)
                if not self.is_bridge(name):
                    out.append(Iface(name, i, side, tuple(addrs), seg[i]))
        for b in self.bridges:
            out.append(Iface(b.host, b.name, None, tuple(b.addr), seg[b.name]))
        return [f for f in out if host is None or f.host == host]

    def addresses(self, host: str, family: int | None = None) -> list[IPInterface]:
        """The host's addresses (with prefix) in §8 order, optionally of one family (4/6)."""
        self.host(host)
        return [a for f in self.ifaces(host) for a in f.addrs
                if family is None or a.version == family]

    def owner(self, addr: IPAddress | str) -> str | None:
        ip = ipaddress.ip_address(addr)
        for f in self.ifaces():
            if any(a.ip == ip for a in f.addrs):
                return f.host
        return None

    # ---- §8 address rules --------------------------------------------------------------------
    def flow_dst_addr(self, flow: Flow | str) -> IPAddress:
        """dst_addr when given, else the destination's first address of the flow's family."""
        flow = self.flow(flow) if isinstance(flow, str) else flow
        if flow.dst_addr is not None:
            return flow.dst_addr
        addrs = self.addresses(flow.dst, flow.family)
        if not addrs:
            raise ValueError(f"flow {flow.name}: {flow.dst} has no IPv{flow.family} address")
        return addrs[0].ip

    def sync_addr(self, host: str, family: int = 4) -> IPAddress:
        """Where the manager probes ``host``: sync_addr, else its address on a link (or
        bridge segment) shared with the manager, else its first address."""
        h = self.host(host)
        if h.sync_addr is not None:
            return h.sync_addr
        mgr_segments = {f.segment for f in self.ifaces(self.manager.name)
                        if any(a.version == family for a in f.addrs)}
        for f in self.ifaces(host):
            if f.segment in mgr_segments:
                for a in f.addrs:
                    if a.version == family:
                        return a.ip
        addrs = self.addresses(host, family) or self.addresses(host)
        if not addrs:
            raise ValueError(f"host {host} has no address to synchronise with")
        return addrs[0].ip

    def sync_targets(self, family: int = 4) -> dict[str, IPAddress]:
        """Every non-manager host and the address the manager syncs it at."""
        return {h.name: self.sync_addr(h.name, family) for h in self.hosts if h.role != "manager"}

    # ---- routing -------------------------------------------------------------------------------
    def routes_for(self, host: str) -> list[tuple[IPNetwork, IPAddress]]:
        """Static routes the builder installs: the file's, plus a default route of each family
        for a vm/container toward its parent's address on a segment they share."""
        out = [(r.network, r.via) for r in self.routes if r.host == host]
        h = self.host(host)
        if h.parent is None:
            return out
        parent_ifaces = self.ifaces(h.parent)
        for family in (4, 6):
            if any(net.prefixlen == 0 and net.version == family for net, _ in out):
                continue
            gw = self._parent_gateway(host, parent_ifaces, family)
            if gw is not None:
                out.append((ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0"), gw))
        return out

    def _parent_gateway(self, host: str, parent_ifaces: list[Iface],
                        family: int) -> IPAddress | None:
        for mine in self.ifaces(host):
            for theirs in parent_ifaces:
                if theirs.segment != mine.segment:
                    continue
                for a in theirs.addrs:
                    if a.version == family and any(a in m.network for m in mine.addrs):
                        return a.ip
        return None

    def _next_hop(self, host: str, dst: IPAddress) -> tuple[Iface, IPAddress]:
        """Longest-prefix match over connected networks and routes: (egress iface, neighbour)."""
        best: tuple[int, int, Iface, IPAddress] | None = None   # (prefixlen, connected, ...)
        mine = self.ifaces(host)
        for f in mine:
            for a in f.addrs:
                if a.version == dst.version and dst in a.network:
                    cand = (a.network.prefixlen, 1, f, dst)
                    if best is None or cand[:2] > best[:2]:
                        best = cand
        for net, via in self.routes_for(host):
            if net.version == dst.version and dst in net:
                egress = next((f for f in mine for a in f.addrs
                               if a.version == via.version and via in a.network), None)
                if egress is None:
                    raise ValueError(f"{host}: route {net} via {via}: {via} is on none of "
                                     f"{host}'s networks")
                cand = (net.prefixlen, 0, egress, via)
                if best is None or cand[:2] > best[:2]:
                    best = cand
        if best is None:
            raise ValueError(f"{host} has no route to {dst}")
        return best[2], best[3]

    def source_addr(self, host: str, dst: IPAddress | str) -> IPAddress:
        """The source address the kernel picks on ``host`` toward ``dst`` (its egress iface's)."""
        dst = ipaddress.ip_address(dst)
        egress, _ = self._next_hop(host, dst)
        for a in egress.addrs:
            if a.version == dst.version:
                return a.ip
        raise ValueError(f"{host}: the interface toward {dst} has no IPv{dst.version} address")

    def path(self, src: str, dst_addr: IPAddress | str) -> list[Hop]:
        """The hosts packets from ``src`` to ``dst_addr`` cross, with the L2-only hops of
        bridges that live in a third host's namespace."""
        dst_ip = ipaddress.ip_address(dst_addr)
        target = self.owner(dst_ip)
        if target is None:
            raise ValueError(f"{dst_ip} is no host's address")
        hops: list[tuple[str, bool, int | str | None]] = [(src, True, None)]
        devices: list[list[int | str]] = [[]]
        host = src
        while host != target:
            if len(hops) > MAX_HOPS:
                raise ValueError(f"routing loop toward {dst_ip}: "
                                 + " -> ".join(h[0] for h in hops))
            egress, neigh = self._next_hop(host, dst_ip)
            nxt = next((f for f in self.ifaces() if f.segment == egress.segment and f is not egress
                        and any(a.ip == neigh for a in f.addrs)), None)
            if nxt is None:
                raise ValueError(f"{host}: next hop {neigh} toward {dst_ip} is not on the "
                                 f"segment of its interface {egress.key}")
            out_dev, in_dev = self._crossing(egress, nxt)
            devices[-1] += out_dev
            bridge = next((b for b in self.bridges
                           if self._segments()[b.name] == egress.segment), None)
            if bridge is not None and bridge.host not in (host, nxt.host):
                # switched at L2 in a third namespace: in one port, out the other
                hops.append((bridge.host, False, bridge.name))
                devices.append([egress.key, nxt.key])
            hops.append((nxt.host, True, nxt.key))
            devices.append(in_dev)
            host = nxt.host
        return [Hop(h, l3, via, tuple(d)) for (h, l3, via), d in zip(hops, devices, strict=True)]

    def _crossing(self, egress: Iface, nxt: Iface) -> tuple[list[int | str], list[int | str]]:
        """Device keys a packet passes leaving ``egress``'s host and entering ``nxt``'s."""
        if isinstance(egress.key, str):          # out through our own bridge, then its port
            return [egress.key, nxt.key], [nxt.key]
        if isinstance(nxt.key, str):             # into the bridge host: its port, then bridge
            return [egress.key], [egress.key, nxt.key]
        return [egress.key], [nxt.key]

    def path_hosts(self, flow: Flow | str) -> list[str]:
        """The topology hosts a flow's data packets cross, source to destination."""
        flow = self.flow(flow) if isinstance(flow, str) else flow
        return [h.host for h in self.path(flow.src, self.flow_dst_addr(flow))]


def check_reachability(t: Topology) -> Iterator[tuple[str, str]]:
    """Every flow (and its answers) and every sync target must route, as the kernel will."""
    for i, f in enumerate(t.flows):
        try:
            dst = t.flow_dst_addr(f)
            t.path(f.src, dst)
            t.path(f.dst, t.source_addr(f.src, dst))   # ACKs / replies come back
        except ValueError as e:
            yield f"flows[{i}]", f"flow {f.name} ({f.src} -> {f.dst}) cannot be routed: {e}"
    mgr = t.manager.name
    for i, h in enumerate(t.hosts):
        if h.name == mgr or not t.addresses(h.name):
            continue
        try:
            addr = t.sync_addr(h.name)
            t.path(mgr, addr)
            t.path(h.name, t.source_addr(mgr, addr))
        except ValueError as e:
            yield f"hosts[{i}]", f"the manager {mgr} cannot synchronise {h.name}: {e} " \
                                 "(add routes, or set sync_addr)"
