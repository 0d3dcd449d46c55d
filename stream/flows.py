"""Which flow a record's FlowKey belongs to, and which hosts its bytes must cross.

A sample closes as soon as every host on its flow's path has reported, so every flow needs
a path, declared or not (every real connection, every reply direction with an ephemeral
port). Three sources, in order:

- a topology flow (proto, destination host, port): its name and the topology's path;
- the topology's routing, for any other flow between two addresses the topology knows:
  the hosts the kernel routes it through (``routes``: (source host, destination address));
- what the records say: the hosts of a complete, unflagged sample of the same address pair
  that closed with every host it had (by the join window, the first time), in path order.
  A path grows when a later sample shows a host it lacks (a late record, a route change);
  until a pair has one, its samples close by the join window. Learned paths live in the
  worker's memory: a worker that takes over learns them again.

The topology's tables come from the settings resolver (``latscope.settings.flow_resolver``);
the stream never reads a topology itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from latscope.schemas.records import flow_id

_CACHE_MAX = 100_000   # flow ids (and learned address pairs) remembered; cleared past this


@dataclass(slots=True)
class Route:
    """The hosts a flow's bytes cross, in path order; None while not known yet."""
    hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FlowInfo:
    name: str
    path: tuple[str, ...] | None
    route: Route | None = None   # a path learned from records (shared by an address pair)
    declared: bool = True   # a topology flow; else named by its flow id (one per connection)

    def hosts(self) -> tuple[str, ...] | None:
        return self.path if self.route is None else self.route.hosts


@dataclass
class FlowResolver:
    """Matches (proto, destination host, destination port) to a topology flow; routes or
    learns the path of every other flow."""

    addr_host: Mapping[str, str] = field(default_factory=dict)
    flows: Mapping[tuple[str, str, int], FlowInfo] = field(default_factory=dict)
    clock_hosts: Mapping[str, str] = field(default_factory=dict)   # container → parent
    manager: str | None = None
    routes: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    _cache: dict[str, FlowInfo] = field(default_factory=dict)
    _learned: dict[tuple[str, str], Route] = field(default_factory=dict)

    def resolve(self, flow: Mapping, fid: str | None = None) -> FlowInfo:
        """``fid``: the flow's id when the caller has it (every record carries it)."""
        if fid is None:
            fid = flow_id(flow)
        info = self._cache.get(fid)
        if info is None:
            src_host = self.addr_host.get(flow["src"])
            dst_host = self.addr_host.get(flow["dst"])
            info = self.flows.get((flow["proto"], dst_host or "", flow["dport"]))
            if info is None:
                routed = self.routes.get((src_host, flow["dst"])) if src_host else None
                info = FlowInfo(fid, routed, declared=False) if routed else FlowInfo(
                    fid, None, self._route(flow["src"], flow["dst"]), declared=False)
            if len(self._cache) > _CACHE_MAX:   # flows come and go (new source ports)
                self._cache.clear()
            self._cache[fid] = info
        return info

    def path(self, event: Mapping) -> Sequence[str] | None:
        """The hosts a record's bytes must cross (None: not known yet)."""
        return self.resolve(event["flow"], event["flow_id"]).hosts()

    def learn(self, info: FlowInfo, bd: Mapping) -> bool:
        """Take a closed sample's hosts as its address pair's path when it is a whole,
        unflagged sample (sock_send to sock_recv) with a host the path lacks. True: learned."""
        route = info.route
        if route is None or not bd["complete"] or bd["retrans"]:
            return False
        hosts = bd["hosts"]
        known = route.hosts
        if known is not None and all(h in known for h in hosts):
            return False
        route.hosts = tuple(hosts) if known is None or all(h in hosts for h in known) \
            else (*known[:-1], *(h for h in hosts if h not in known), known[-1])
        return True

    def late(self, event: Mapping) -> None:
        """A record that came after its sample closed: if its host is not on the learned
        path, the path lacked it (the first samples lost on the way, a new route)."""
        route = self.resolve(event["flow"], event["flow_id"]).route
        if route is not None and route.hosts and event["host"] not in route.hosts:
            route.hosts = (*route.hosts[:-1], event["host"], route.hosts[-1])

    def learned(self) -> dict[str, list[str]]:
        """Learned paths by ``src→dst`` address pair (web views)."""
        return {f"{s}→{d}": list(r.hosts) for (s, d), r in self._learned.items() if r.hosts}

    def _route(self, src: str, dst: str) -> Route:
        route = self._learned.get((src, dst))
        if route is None:
            if len(self._learned) > _CACHE_MAX:
                self._learned.clear()
                self._cache.clear()
            route = self._learned[(src, dst)] = Route()
        return route
