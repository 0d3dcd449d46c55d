"""Turn the joined records of one sampled byte into a clock-corrected, per-layer breakdown.

Path order never comes from sorting corrected timestamps across hosts: that would hide
exactly the negative durations a bad clock produces. Hosts are ordered along the path
(topology when known, else sender first, receiver last, forwarders by time), and points
inside one host by where they sit in the stack. Only where the stack order itself varies
does one host's own clock decide (it is one clock, so this hides no clock error): the
device blocks (several devices: container veth, bridge, NIC) and the receive block
(xdp, dev_rx of every device, ip_pre). The latter matters with br_netfilter
(``bridge-nf-call-iptables=1``): the IPv4 PREROUTING hook then runs inside the bridge,
before the frame is passed up to the bridge device, so the real order is
dev_rx@port → ip_pre → dev_rx@bridge → ip_post/ip_in.

Layer of a consecutive pair (design §2 point names):

  same host   sock_send→tcp_tx socket | sock_send→ip_out socket (tcp_tx missing: the
              merged socket+tcp segment; its ``to`` point says so) | tcp_tx→ip_out tcp |
              ip_*→ip_* ip | ip_*→dev_queue ip | dev_queue→dev_xmit (one device) qdisc |
              dev_xmit→next device point (another device) virtual | dev_rx→dev_rx
              (bridge port → bridge) virtual | xdp/dev_rx→ip_pre device | ip_in→tcp_rx tcp |
              tcp_rx→sock_recv socket
              br_netfilter: dev_rx@port→ip_pre device (the port's receive up to the IP
              hook, as without a bridge) | ip_pre→dev_rx@bridge virtual, device = the
              bridge (the bridge passing the frame up to its own device: the rest of the
              bridge hop) | dev_rx@bridge→ip_post/ip_in ip (IP work after its hook)
  two hosts   wire (clock-corrected; error bound = sum of the two hosts' bounds) |
              dev_queue→(other host) qdisc: dev_xmit missing, the merged qdisc+wire segment

Device kind is not guessed from names: a hop between two devices on one host is
``virtual`` (only veth/bridge/tap hand packets over inside a host), a hop between hosts is
``wire`` whatever carries it (a veth pair between namespaces in the demo).

A byte passing a host twice (retransmitted, or a spurious resend of which both copies got
through) must not mix copies: see ``drop_repeats``.
"""


from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter

from latscope.schemas.points import TABLE
from latscope.stream._native import (
    fill_segments,
    plain_refs,
    shape_cached,
    shape_forget,
    shape_remember,
)
from latscope.stream.clock_model import to_reference

# Every per-point fact below comes from the one point table (schemas/points.py).
DEVICE_POINTS = frozenset(p.name for p in TABLE if p.device)
# Stack position inside one host (PointDef.rank). Ingress device block (xdp, dev_rx of every
# device the skb crosses), then IP; local delivery (ip_in...) or forwarding/egress (ip_post,
# egress device block). A byte is either delivered or forwarded on one host, never both, so
# ip_in and ip_post may share a rank.
_RANK = {p.name: p.rank for p in TABLE}
_IN_BLOCK = {p.name: p.in_block for p in TABLE if p.device}
_POINT_LAYER = {p.name: p.layer for p in TABLE}
# drop_repeats: the transmit chain below the socket keeps its latest copy.
_KEEP_LAST = frozenset(p.name for p in TABLE if p.direction == "tx" and not p.socket)
# Points only a host with the flow's socket has: a host with none of them forwards.
_LOCAL = frozenset(p.name for p in TABLE if p.local)
_RX_BLOCK = frozenset(p.name for p in TABLE if p.rx_block)
_RX_DEVICE = _RX_BLOCK & DEVICE_POINTS                       # xdp, dev_rx
_IP = frozenset(p.name for p in TABLE if p.layer == "ip")    # the netfilter points
# Sort kinds of a point inside one host (order_points): the receive block, ordered by the
# host's clock; a transmit device block, ordered by device then queue/xmit; the rest, by rank.
_RX, _TX_DEV, _PLAIN = 0, 1, 2


class Point:
    """One stack point of one host, interned per (host, point, device): per sample only
    timestamps change, so everything derived from the names is computed once. ``label``
    is ``host:point`` or ``host:point@device`` (§8)."""

    __slots__ = ("dev", "host", "in_block", "kind", "label", "point", "rank")

    def __init__(self, host: str, point: str, dev: str | None) -> None:
        self.host, self.point, self.dev = host, point, dev
        self.label = (f"{host}:{point}@{dev}" if dev and point in DEVICE_POINTS
                      else f"{host}:{point}")
        self.rank = _RANK[point]
        self.in_block = _IN_BLOCK.get(point, 0)
        self.kind = (_RX if point in _RX_BLOCK else _TX_DEV if point in DEVICE_POINTS
                     else _PLAIN)


class ClockView:
    """Host clock → reference clock with the current ClockModel records.

    The manager is the reference (identity, bound 0). A host with no model yet is left
    uncorrected with an infinite bound: its cross-host segments are then marked unusable
    by their bound rather than silently trusted. ``clock_hosts`` maps a host sharing another
    host's kernel clock (a container) to that host.
    """

    def __init__(self, models: Mapping[str, dict], manager: str | None,
                 clock_hosts: Mapping[str, str] | None = None) -> None:
        self.models = models
        self.manager = manager
        self.clock_hosts = clock_hosts or {}
        self._pair_bounds: dict[tuple[str, str], float] = {}   # see pair_bound
        self._params: dict[str, tuple[float, float, float] | None] = {}   # see ref_params

    def model(self, host: str) -> dict | None:
        host = self.clock_hosts.get(host, host)
        if host == self.manager:
            return None
        return self.models.get(host)

    def ref_params(self, host: str) -> tuple[float, float, float] | None:
        """(offset_ns, drift * ref_ns, 1 + drift) of the host's model (None: no model or the
        reference): _to_ref's constants, remembered per host like pair_bound."""
        try:
            return self._params[host]
        except KeyError:
            model = self.model(host)
            got = self._params[host] = None if model is None else _ref_params(model)
            return got

    def is_reference(self, host: str) -> bool:
        return self.clock_hosts.get(host, host) == self.manager

    def to_ref(self, host: str, ts: int) -> int:
        model = self.model(host)
        return ts if model is None else round(to_reference(model, ts))

    def bound(self, host: str) -> float:
        host = self.clock_hosts.get(host, host)
        if host == self.manager:
            return 0.0
        model = self.models.get(host)
        return math.inf if model is None else float(model["error_bound_ns"])

    def pair_bound(self, a: str, b: str) -> float:
        """Error bound of a duration between two hosts: 0 when they share one clock.

        Remembered per pair (every sample's cross-host segments ask): a view is read while
        its models stay as they are, the stream worker makes a new one per batch."""
        got = self._pair_bounds.get((a, b))
        if got is None:
            clock_hosts = self.clock_hosts
            got = (0.0 if clock_hosts.get(a, a) == clock_hosts.get(b, b)
                   else self.bound(a) + self.bound(b))
            self._pair_bounds[(a, b)] = got
        return got

    def synced(self, host: str) -> bool:
        return self.is_reference(host) or self.model(host) is not None


def host_order(hits_by_host: Mapping[str, Sequence[dict]], clocks: ClockView,
               path: Sequence[str] | None) -> list[str]:
    """Hosts along the path: the topology's order, else sender, forwarders by time, receiver."""
    if path:
        known = [h for h in path if h in hits_by_host]
        off = [h for h in hits_by_host if h not in path]
        return known + sorted(off) if off else known
    hosts = list(hits_by_host)

    def first_ref(h: str) -> int:
        return min(clocks.to_ref(h, hit["ts_ns"]) for hit in hits_by_host[h])

    def role(h: str) -> int:
        points = {hit["point"] for hit in hits_by_host[h]}
        if "sock_send" in points:
            return 0
        if "sock_recv" in points or "tcp_rx" in points:
            return 2
        return 1

    return sorted(hosts, key=lambda h: (role(h), first_ref(h), h))


def passes(hits: Sequence[dict]) -> list[list[dict]]:
    """One host's hits split into passes of the byte, in time order (one clock): a pass
    ends where a (point, device) repeats."""
    out: list[list[dict]] = []
    cur: list[dict] = []
    seen: set[tuple[str, str | None]] = set()
    for hit in sorted(hits, key=lambda h: h["ts_ns"]):
        k = (hit["point"], hit.get("dev"))
        if k in seen:
            out.append(cur)
            cur, seen = [], set()
        cur.append(hit)
        seen.add(k)
    out.append(cur)
    return out


def drop_repeats(hits: Sequence[dict],
                 not_after: Callable[[int], bool] | None = None) -> tuple[list[dict], bool]:
    """One hit per (point, device): a byte passing a point twice was retransmitted.

    ``not_after(ts)``: whether a hit of this host (its clock) is not after the next host's
    chosen entry (clock-corrected, plus the pair's sync bound); None for the last host or
    an unsynced pair. Copies of a byte are at least an RTT apart (a resend needs an ACK or
    a timer of >= 2 srtt), longer than the one-way hop to the next host, so the latest
    copy that left not after the next host's entry is the one the next host got.

    A forwarding host (no socket-side point) keeps one whole pass: the latest that ended
    not after the next host's entry, else (no such pass, or no next host) the earliest of
    the passes that went furthest. Mixing passes would put a later copy's exit after an
    earlier copy's entry: an inflated ip segment and a matching negative wire.

    On the sender the copy that got through is the one that reached the last transmit
    point, so the transmit chain is resolved backwards from the latest last point (not
    after the next host's entry): each earlier transmit point keeps its latest hit not
    after the next point's chosen one. sock_send keeps the first hit (when the app handed
    the byte over) and receive points their first (a duplicate arrival changes nothing).
    The loss-recovery wait then lands in sock_send→(tcp_tx|ip_out), where TCP held the
    byte, and the breakdown is flagged ``retrans``.
    """
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for hit in hits:
        groups.setdefault((hit["point"], hit.get("dev")), []).append(hit)
    if all(len(g) == 1 for g in groups.values()):
        return list(hits), False
    if not any(k[0] in _LOCAL for k in groups):
        ps = passes(hits)
        fit = [p for p in ps if not_after is not None and not_after(p[-1]["ts_ns"])]
        if fit:
            return fit[-1], True
        furthest = max(len(p) for p in ps)
        return next(p for p in ps if len(p) == furthest), True
    chosen: dict[tuple[str, str | None], dict] = {}
    tx = []
    for k, g in groups.items():
        if k[0] in _KEEP_LAST:
            tx.append(k)
        else:
            chosen[k] = min(g, key=lambda h: h["ts_ns"])
    # Transmit chain order: stack rank, devices by their first hit, queue before xmit.
    tx.sort(key=lambda k: (_RANK[k[0]], min(h["ts_ns"] for h in groups[k]) if k[0] in
                           DEVICE_POINTS else 0, _IN_BLOCK.get(k[0], 0)))
    limit: int | None = None
    for k in reversed(tx):
        g = groups[k]
        ok = [h for h in g if limit is None or h["ts_ns"] <= limit]
        if limit is None and not_after is not None:
            ok = [h for h in ok if not_after(h["ts_ns"])] or ok
        pick = max(ok, key=lambda h: h["ts_ns"]) if ok else min(g, key=lambda h: h["ts_ns"])
        chosen[k] = pick
        limit = pick["ts_ns"]
    return list(chosen.values()), True


class _Shape:
    """The (point, device) sequence of one host's record, as it arrives: its interned
    points, whether a point repeats (then drop_repeats chooses first), and how to put it in
    stack order. ``order`` is that order when it does not depend on timestamps; the
    receive block (``rx``: (index, rank, in_block) in arrival order, at ``rx_at`` in
    ``order``) is then sorted by time alone. ``order`` None: sort every hit by its key."""

    __slots__ = ("order", "points", "rx", "rx_at", "rx_pair", "tie_swap", "unique")

    def __init__(self, host: str, pds: tuple[tuple[str, str | None], ...]) -> None:
        self.points = tuple(_point(host, p, d) for p, d in pds)
        self.unique = len(set(pds)) == len(pds)
        self.order: tuple[int, ...] | None = None
        self.rx: tuple[tuple[int, int, int], ...] = ()
        self.rx_at = 0
        self.rx_pair = -1        # rx_at when the receive block is two points, else -1
        self.tie_swap = False    # those two at one timestamp: the second goes first
        groups: dict[int, list[int]] = {}
        for i, pt in enumerate(self.points):
            groups.setdefault(3 if pt.kind == _RX else pt.rank, []).append(i)
        order: list[int] = []
        for primary in sorted(groups):
            g = groups[primary]
            kinds = {self.points[i].kind for i in g}
            if kinds == {_RX}:
                self.rx_at = len(order)
                self.rx = tuple((i, self.points[i].rank, self.points[i].in_block) for i in g)
                order.extend(g)
            elif len(g) == 1:
                order.extend(g)
            elif kinds == {_TX_DEV} and len({self.points[i].dev for i in g}) == 1:
                # One device's queue and xmit (unique: at most one of each).
                order.extend(sorted(g, key=lambda i: self.points[i].in_block))
            else:
                return   # several devices or ranks shared: timestamps decide
        self.order = tuple(order)
        if len(self.rx) == 2:
            (_, ri, bi), (_, rj, bj) = self.rx
            self.rx_pair, self.tie_swap = self.rx_at, (rj, bj) < (ri, bi)

    @property
    def plain(self) -> bool:
        """No repeats, and stack order decided by at most one pair of timestamps."""
        return self.unique and self.order is not None and len(self.rx) <= 2


_POINTS: dict[tuple[str, str, str | None], Point] = {}
_SHAPES: dict[tuple, _Shape] = {}
_SEGMENTS: dict[tuple[Point, ...], tuple] = {}
_CACHE_MAX = 100_000   # distinct hosts × record shapes seen; cleared (not grown) past this
_PD = itemgetter("point", "dev")


def _point(host: str, point: str, dev: str | None) -> Point:
    k = (host, point, dev)
    p = _POINTS.get(k)
    if p is None:
        p = _POINTS[k] = Point(host, point, dev)
    return p


def _shape(host: str, hits: Sequence[dict]) -> _Shape:
    s = shape_cached(host, hits)   # by the names' identity (stream/native/shapes.c)
    if s is not None:
        return s
    try:
        pds = tuple(map(_PD, hits))
    except KeyError:   # dev is optional in hand-made records
        pds = tuple((h["point"], h.get("dev")) for h in hits)
    k = (host, pds)
    s = _SHAPES.get(k)
    if s is None:
        if len(_SHAPES) > _CACHE_MAX:
            _SHAPES.clear()
            _SEGMENTS.clear()
            _POINTS.clear()
            _PLANS.clear()
            shape_forget()
        s = _SHAPES[k] = _Shape(host, pds)
    shape_remember(host, hits, s)
    return s


def order_points(shape: _Shape, hits: Sequence[dict]) -> tuple[list[Point], list[int]]:
    """One host's hits (one per point) in stack order, with their host-clock timestamps.

    Stack order by rank; device blocks by device, devices by their first hit, queue before
    xmit; the receive block (xdp, dev_rx, ip_pre) by this host's clock (br_netfilter, see
    above); a tie keeps arrival order."""
    ts = [h["ts_ns"] for h in hits]
    pts = shape.points
    order = shape.order
    if order is not None:
        if len(shape.rx) > 1:
            rx = shape.rx
            if len(rx) == 2:
                (i, ri, bi), (j, rj, bj) = rx
                swap = (ts[j], rj, bj) < (ts[i], ri, bi)
                block = (j, i) if swap else (i, j)
            else:
                block = tuple(e[0] for e in sorted(rx, key=lambda e: (ts[e[0]], e[1], e[2])))
            at = shape.rx_at
            order = order[:at] + block + order[at + len(rx):]
        return [pts[i] for i in order], [ts[i] for i in order]
    first_of_dev: dict[tuple[int, str | None], int] = {}
    for pt, t in zip(pts, ts, strict=True):
        if pt.kind == _TX_DEV:
            k = (pt.rank, pt.dev)
            first_of_dev[k] = min(first_of_dev.get(k, t), t)
    keys = []
    for pt, t in zip(pts, ts, strict=True):
        if pt.kind == _RX:
            keys.append((3, t, pt.rank, pt.in_block))
        elif pt.kind == _TX_DEV:
            keys.append((pt.rank, first_of_dev[(pt.rank, pt.dev)], pt.in_block, t))
        else:
            keys.append((pt.rank, 0, 0, t))
    idx = sorted(range(len(pts)), key=keys.__getitem__)
    return [pts[i] for i in idx], [ts[i] for i in idx]


def layer_of(a: Point, b: Point, *, past_ip_pre: bool = False) -> tuple[str, str | None]:
    """(layer, device) of the segment between two consecutive points; ``past_ip_pre``:
    this host's ip_pre came before ``a`` (br_netfilter order)."""
    if a.host != b.host:
        if a.point == "dev_queue":      # dev_xmit missing: the queue wait (ms) dwarfs the wire (µs)
            return "qdisc", a.dev
        return "wire", a.dev if a.point in DEVICE_POINTS else None
    pa, pb = a.point, b.point
    if pa == "dev_queue" and pb == "dev_xmit" and a.dev == b.dev:
        return "qdisc", a.dev
    if pa == "ip_pre" and pb in _RX_DEVICE:   # br_netfilter: bridge → its device
        return "virtual", b.dev
    if past_ip_pre and pa in _RX_DEVICE and pb in _IP:
        return "ip", None
    if pa in DEVICE_POINTS and pb in DEVICE_POINTS:
        if a.dev != b.dev:
            return "virtual", a.dev
        return "device", a.dev          # xdp → dev_rx on one device
    if pa in DEVICE_POINTS:             # dev_rx/xdp → ip_pre (or a stray dev_xmit → ...)
        return "device", a.dev
    if pb in DEVICE_POINTS:             # ip_post → dev_queue etc.
        return _POINT_LAYER[pa], b.dev
    if pa == "sock_send":
        return "socket", None           # → tcp_tx, or → ip_out when tcp_tx is missing
    if pb == "sock_recv":
        return "socket", None
    if pa in _IP and pb in _IP:
        return "ip", None
    if pa == "tcp_tx" or pb == "tcp_rx":
        return "tcp", None
    return _POINT_LAYER[pb], None


def _segments_of(points: tuple[Point, ...]) -> tuple:
    """What a path's segments are, from its points alone: each one's Segment dict to copy
    (duration, hosts and a cross-host bound to fill in), hosts, and host pair (None: one
    host); the cross-host pairs; whether it runs sock_send→sock_recv."""
    segs = []
    past_ip_pre = False
    for a, b in itertools.pairwise(points):
        past_ip_pre = a.host == b.host and (past_ip_pre or a.point == "ip_pre")
        layer, dev = layer_of(a, b, past_ip_pre=past_ip_pre)
        same = a.host == b.host
        segs.append(({"from": a.label, "to": b.label, "layer": layer, "hosts": None,
                      "device": dev, "duration_ns": 0, "error_bound_ns": 0.0, "wait": None},
                     (a.host,) if same else (a.host, b.host),
                     None if same else (a.host, b.host)))
    pairs = tuple(dict.fromkeys(s[2] for s in segs if s[2] is not None))
    ends_ok = points[0].point == "sock_send" and points[-1].point == "sock_recv"
    return tuple(segs), pairs, ends_ok


class _Plan:
    """A whole sample's shape (its hosts' record shapes, all plain): segment templates per
    outcome of the hosts' two-point receive blocks (bit i set: host i's swapped)."""

    __slots__ = ("orders", "rx_pairs", "segments", "shapes", "tie_swaps")

    def __init__(self, shapes: tuple[_Shape, ...]) -> None:
        self.shapes = shapes
        self.segments: dict[int, tuple] = {}
        # per host, for plain_refs (stream/native/segments.c)
        self.orders = tuple(s.order for s in shapes)
        self.rx_pairs = tuple(s.rx_pair for s in shapes)
        self.tie_swaps = tuple(s.tie_swap for s in shapes)

    def segments_for(self, swapped: int) -> tuple:
        points: list[Point] = []
        for i, shape in enumerate(self.shapes):
            pts = [shape.points[k] for k in shape.order]
            at = shape.rx_pair
            if swapped >> i & 1:
                pts[at], pts[at + 1] = pts[at + 1], pts[at]
            points += pts
        out = self.segments[swapped] = _segments_of(tuple(points))
        return out


_PLANS: dict[tuple[_Shape, ...], _Plan] = {}


def dedup_hits(records: Sequence[dict]) -> dict[str, list[dict]]:
    """Hits per host; a host that sent several records (linger flush, then the rest) merges."""
    by_host = {r["host"]: r["hits"] for r in records}
    if len(by_host) == len(records):   # the usual case: one record each
        return by_host
    out: dict[str, list[dict]] = {}
    seen: set[tuple] = set()
    for rec in records:
        for hit in rec["hits"]:
            k = (rec["host"], hit["point"], hit["ts_ns"], hit.get("ifindex", 0))
            if k in seen:
                continue
            seen.add(k)
            out.setdefault(rec["host"], []).append(hit)
    return out


def _ref_params(model: Mapping) -> tuple[float, float, float]:
    """clock.to_reference's constants: ref = (host - offset + lift) / scale."""
    drift = model["drift_ppm"] * 1e-6
    return model["offset_ns"], drift * model["ref_ns"], 1.0 + drift


def _to_ref(ts: list[int], model: dict) -> list[int]:
    """clock.to_reference of every timestamp, its arithmetic unchanged, constants hoisted
    (plain_refs in stream/native/segments.c does the same)."""
    off, lift, scale = _ref_params(model)
    return [round((t - off + lift) / scale) for t in ts]


def _refs(hosts: list[str], shapes: tuple[_Shape, ...], by_host: Mapping[str, list],
          clocks: ClockView) -> tuple[list[int], list[Point], bool]:
    """Reference timestamps and points in path order of any sample, and whether a host's
    record repeated points (then one copy is chosen, see drop_repeats)."""
    retrans = False
    # Last host first: each host's copy is chosen against the next host's entry.
    chosen: dict[str, tuple[list[Point], list[int]]] = {}
    entry: tuple[str, int] | None = None      # next host, its first point (reference)
    for h, shape in zip(reversed(hosts), reversed(shapes), strict=True):
        hits = by_host[h]
        if not shape.unique:
            not_after = None
            if entry is not None:
                bound = clocks.pair_bound(h, entry[0])
                if math.isfinite(bound):
                    limit = entry[1] + bound

                    def not_after(ts: int, h: str = h, limit: float = limit) -> bool:
                        return clocks.to_ref(h, ts) <= limit
            hits, repeated = drop_repeats(hits, not_after)
            retrans = retrans or repeated
            shape = _shape(h, hits)
        pts, ts = order_points(shape, hits)
        model = clocks.model(h)
        if model is not None:
            ts = _to_ref(ts, model)
        chosen[h] = pts, ts
        if pts:
            entry = (h, ts[0])
    points: list[Point] = []
    refs: list[int] = []
    for h in hosts:
        pts, ts = chosen[h]
        points += pts
        refs += ts
    return refs, points, retrans


def _socket_waits(by_host: dict[str, list[dict]], segments: list[dict]) -> None:
    """The socket-wait causes a host's socket measured (a hit's wait: tcp_tx for the
    sender's segment from sock_send, sock_recv for the receiver's from tcp_rx) onto the
    socket segment ending at that hit."""
    for host, hits in by_host.items():
        for hit in hits:
            if hit.get("wait"):
                to = f"{host}:{hit['point']}"
                for seg in segments:
                    if seg["to"] == to and seg["layer"] == "socket":
                        seg["wait"] = hit["wait"]


def breakdown(records: Sequence[dict], clocks: ClockView, *,
              path: Sequence[str] | None = None) -> dict:
    """Breakdown record (schemas/breakdown.avsc) of one sampled byte from its joined records.

    ``path``: the hosts the byte should cross (topology); hosts missing from it make the
    sample incomplete. Without a path a sample is complete when it runs from sock_send to
    sock_recv. ``end_to_end_ns`` is only set for complete samples.

    Hot path (design §9): names, labels, stack order and layers are worked out once per
    record shape and path (interned, cached); per sample only timestamps are handled.
    """
    if not records:
        raise ValueError("breakdown of no records")
    first = records[0]
    by_host = dedup_hits(records)
    hosts = host_order(by_host, clocks, path)
    retrans = True in [r.get("retrans") for r in records]
    shapes = tuple([_shape(h, by_host[h]) for h in hosts])
    plan = _PLANS.get(shapes)
    if plan is None and all(s.plain for s in shapes):
        if len(_PLANS) > _CACHE_MAX:
            _PLANS.clear()
        plan = _PLANS[shapes] = _Plan(shapes)
    got = NotImplemented if plan is None else plain_refs(
        [by_host[h] for h in hosts], plan.orders, plan.rx_pairs, plan.tie_swaps,
        [clocks.ref_params(h) for h in hosts])
    if got is not NotImplemented:   # NotImplemented: a timestamp not an int, say
        refs, swapped = got
        shaped = plan.segments.get(swapped) or plan.segments_for(swapped)
    else:
        refs, points, repeated = _refs(hosts, shapes, by_host, clocks)
        retrans = retrans or repeated
        key = tuple(points)
        shaped = _SEGMENTS.get(key)
        if shaped is None:
            if len(_SEGMENTS) > _CACHE_MAX:
                _SEGMENTS.clear()
            shaped = _SEGMENTS[key] = _segments_of(key)
    templates, pairs, ends_ok = shaped
    segments = fill_segments(templates, refs, {p: clocks.pair_bound(*p) for p in pairs})
    _socket_waits(by_host, segments)

    missing = [h for h in (path or ()) if h not in by_host]
    complete = ends_ok and not missing
    src = path[0] if path else hosts[0]
    dst = path[-1] if path else hosts[-1]
    return {
        "schema_version": 2, "flow_id": first["flow_id"], "flow": first["flow"],
        "seq": first["seq"], "src_host": src, "dst_host": dst, "ts_ns": refs[0],
        "end_to_end_ns": refs[-1] - refs[0] if complete else None,
        "complete": complete, "retrans": retrans,
        "hosts": hosts, "missing_hosts": missing, "segments": segments,
    }


def end_to_end_bound(bd: dict, clocks: ClockView) -> float:
    """Sync error bound of a breakdown's end-to-end delay (first and last host)."""
    hosts = bd["hosts"]
    return clocks.pair_bound(hosts[0], hosts[-1]) if hosts else 0.0
