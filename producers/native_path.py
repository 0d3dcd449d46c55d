"""The agent's data path in C (producers/native/, module latscope.producers._native) behind
the Grouper's interface, for Agent (AgentSettings.native).

Agent.process with the Python Grouper and LayerEventEncoder costs tens of µs per published
record; the native Path does the same work (decode, expand, group, encode) at ~1 µs. Python
keeps everything that is not per hit: the configuration (a Grouper's fields: the
reference implementation sets the defaults), the point table and the rules' point sets
(grouping.py's constants, as point numbers), the event layout (latscope.h, via layout.py),
each flow's tuple and id and each schema-bound encoding (producers/avro.py). Records come
out as (flow_id, LayerEvent body, first hit) triples, for LayerEventPublisher.publish_encoded;
tests/producers/test_native_grouping.py holds them and every counter to the Python path's.
"""

from __future__ import annotations

from collections.abc import Iterable

from latscope.producers import grouping as _g
from latscope.producers import layout
from latscope.producers._native import Path
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.flow_stats import flow_of
from latscope.producers.grouping import FlowT, GroupCounters, Grouper, flow_id_of

Encoded = tuple[str, bytes, int]   # a record as the native path hands it on: flow id, body, first hit (ns)

# The event fields the C reads and their widths, in its order (native.h's F_*).
_FIELDS = (("ts_ns", 8), ("netns", 8), ("saddr", 16), ("daddr", 16), ("seq", 4), ("len", 4),
           ("ifindex", 4), ("cpu", 4), ("sport", 2), ("dport", 2), ("point", 1),
           ("family", 1), ("proto", 1), ("flags", 1), ("dev", 16),
           ("wait_" + layout.WAIT_CAUSES[0], 4))   # the first of NWAIT (native.h) in a row
if len(layout.WAIT_CAUSES) != 8:
    raise layout.LayoutError("enum ls_wait has not 8 causes, the native path reads 8 "
                             "(native.h NWAIT): update producers/native")
_NUM = layout.POINT_NAMES_REV


def _nums(names: Iterable[str]) -> list[int]:
    return sorted(_NUM[n] for n in names if n in _NUM)


def _offsets() -> tuple[int, ...]:
    ct = layout.EVENT.ctype
    out = []
    for name, width in _FIELDS:
        f = getattr(ct, name)
        if f.size != width:
            raise layout.LayoutError(f"ls_event.{name} is {f.size} bytes, the native path "
                                     f"reads {width}: update producers/native")
        out.append(f.offset)
    return tuple(out)


class NativeGrouper:
    """A Grouper's work and counters, in C; configured by `ref` (its fields, never its
    state), expanding ranges at `size` (sampling.effective_size); raw flow keys cached:
    at most `flow_cache` (agent.FLOW_CACHE)."""

    def __init__(self, ref: Grouper, size: int, flow_cache: int,
                 encoder: LayerEventEncoder | None = None) -> None:
        enc = encoder or LayerEventEncoder()
        host = ref.host
        self.clock = ref.clock
        npoints = max(layout.POINT_NAMES) + 1

        def describe(flow: FlowT) -> tuple[str, bytes]:
            fid = flow_id_of(flow)
            return fid, enc.flow_prefix(host, fid, flow)

        self._path = Path({
            "size": size, "linger_ns": ref.linger_ns, "hold_ns": ref.hold_ns,
            "queued_ns": ref.queued_ns, "owed_ns": ref.owed_ns, "recent_ns": ref.recent_ns,
            "rate_cap": ref.rate_cap_per_s, "max_open": ref.max_open,
            "max_recent": ref.max_recent, "flow_cache": flow_cache, "filter_retrans": int(ref.filter_retrans),
            "check_gaps": int(ref.check_gaps), "udp_reads": int(ref.udp_reads), "refill_ns": ref.clock(),
            "event_size": layout.EVENT.size, "offsets": _offsets(), "npoints": npoints,
            "retrans_point": layout.RETRANS, "xdp_point": _NUM["xdp"],
            "flag_udp": layout.FLAG_UDP, "flag_resent": layout.FLAG_RESENT,
            "flag_wait": layout.FLAG_WAIT,
            "send": _NUM[_g._SEND], "recv": _NUM[_g._RECV], "tcp_rx": _NUM[_g._TCP_RX],
            "queue": _NUM[_g._QUEUE], "udp_unread_last": _NUM[_g._UDP_UNREAD_LAST],
            "exit": _nums(_g._EXIT), "socket": _nums(_g._SOCKET),
            "sent_here": _nums(_g._SENT_HERE), "delivered_here": _nums(_g._DELIVERED_HERE),
            "flush": _nums(_g._FLUSH), "read": _nums(_g._READ),
            "takes_read": _nums(_g._TAKES_READ), "attached": _nums(ref.points),
            "tcp_layer": _nums(_g._TCP_LAYER),
            "implies": {_NUM[p]: _nums(need) for p, need in _g._IMPLIES.items()},
            "local": [(_NUM[p], _nums(need)) for p, need in _g._IMPLIES_LOCAL],
            "last": {proto: _NUM[p] for proto, p in _g._LAST.items()},
            "point_enc": tuple(enc.point(layout.POINT_NAMES[i]) if i in layout.POINT_NAMES
                               else None for i in range(npoints)),
            "flow_of": flow_of, "describe": describe, "dev_enc": enc.dev})
        self.process = self._path.process     # (recs, out, now) -> sampled hits
        # (RingBuffer.addresses, out, now, end, commit=True) -> (events, sampled hits): the
        # ring's events up to position end grouped in place, no Python object per event;
        # commit gives them back to the kernel
        self.process_ring = self._path.process_ring
        self.exit_devices = ref.exit_devices
        self.points = ref.points
        self.udp_reads = ref.udp_reads
        self.overrun = ref.overrun

    @property
    def exit_devices(self) -> set[tuple[int, int]]:
        return set(self._exit_devices)

    @exit_devices.setter
    def exit_devices(self, devices: set[tuple[int, int]]) -> None:
        self._exit_devices = frozenset(devices)
        self._path.set_exit_devices(self._exit_devices)

    @property
    def points(self) -> frozenset[str]:
        return self._points

    @points.setter
    def points(self, names: frozenset[str]) -> None:
        self._points = frozenset(names)
        self._path.set_attached(_nums(self._points))

    @property
    def udp_reads(self) -> bool:
        return self._udp_reads

    @udp_reads.setter
    def udp_reads(self, on: bool) -> None:
        self._udp_reads = bool(on)
        self._path.set_udp_reads(self._udp_reads)

    @property
    def overrun(self) -> bool:
        return self._overrun

    @overrun.setter
    def overrun(self, on: bool) -> None:
        self._overrun = on
        self._path.set_overrun(on)

    def set_size(self, size: int) -> None:
        """Expand ranges at this stride from the next batch on (the stride level)."""
        self._path.set_size(size)

    def restride(self, size: int, out: list[Encoded]) -> None:
        self._path.restride(out, size)

    def set_netns(self, inodes: set[int]) -> None:
        """Group only these namespaces' hits (empty: all; group_set.GroupSet)."""
        self._path.set_netns(inodes)

    def set_xdp_names(self, names: dict[tuple[int, int], str]) -> None:
        """(netns inode, ifindex) -> device name, for the XDP point (agent.device_names)."""
        self._path.set_xdp_names(names)

    def expire(self, out: list[Encoded], now: int | None = None) -> None:
        self._path.expire(out, self.clock() if now is None else now)

    def flush_all(self, out: list[Encoded]) -> None:
        self._path.flush_all(out)

    @property
    def counters(self) -> GroupCounters:
        """A snapshot (the C counts; read it again for later values)."""
        return GroupCounters(*self._path.counters())

    @property
    def gap_points(self) -> dict[str, int]:
        return {layout.POINT_NAMES[i]: n for i, n in enumerate(self._path.gap_points()) if n}

    @property
    def open_groups(self) -> int:
        s = self._path.sizes()
        return s["open"] + s["held"] + s["queued"]

    def sizes(self) -> dict[str, int]:
        """Entries in each of the C maps and caches (their bounds are the Grouper's)."""
        return self._path.sizes()
