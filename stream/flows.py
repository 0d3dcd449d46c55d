"""Which topology flow a record's FlowKey belongs to, and which hosts its bytes must cross.

The tables come from the settings resolver (``latscope.settings.flow_resolver``), which reads
a topology file; the stream never reads one itself. Without a topology every flow is known
only by its flow id and samples close by window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from latscope.schemas.records import flow_id

_CACHE_MAX = 100_000   # flow ids remembered; cleared (not grown) past this


@dataclass(frozen=True)
class FlowInfo:
    name: str
    path: tuple[str, ...] | None
    declared: bool = True   # a topology flow; else named by its flow id (one per connection)


@dataclass
class FlowResolver:
    """Matches (proto, destination host, destination port) to a topology flow."""

    addr_host: Mapping[str, str] = field(default_factory=dict)
    flows: Mapping[tuple[str, str, int], FlowInfo] = field(default_factory=dict)
    clock_hosts: Mapping[str, str] = field(default_factory=dict)   # container → parent
    manager: str | None = None
    _cache: dict[str, FlowInfo] = field(default_factory=dict)

    def resolve(self, flow: Mapping, fid: str | None = None) -> FlowInfo:
        """``fid``: the flow's id when the caller has it (every record carries it)."""
        if fid is None:
            fid = flow_id(flow)
        info = self._cache.get(fid)
        if info is None:
            dst_host = self.addr_host.get(flow["dst"])
            info = self.flows.get((flow["proto"], dst_host or "", flow["dport"]))
            if info is None:
                info = FlowInfo(fid, None, declared=False)
            if len(self._cache) > _CACHE_MAX:   # flows come and go (new source ports)
                self._cache.clear()
            self._cache[fid] = info
        return info

    def path(self, event: Mapping) -> Sequence[str] | None:
        """The hosts a record's bytes must cross (None: unknown flow)."""
        return self.resolve(event["flow"], event["flow_id"]).path
