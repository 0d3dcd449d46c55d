"""Group the point hits of one sampled byte on this host into one LayerEvent record (design §3).

A group is flushed when the byte reaches this host's last point (sock_recv; ip_in for UDP,
which has no socket points; dev_xmit on a device that leaves the host, for a TCP byte of a
local socket only once its sock_send hit is in too: PointDef.last_for / .exit in
schemas/points.py), or when the same byte passes a point it
already passed: then the old group is flushed and a new one starts, flagged as a
retransmission (on a receiver that is the only way to know; on the sender the
tcp_retransmit_skb marker flags it too). Otherwise it is flushed, incomplete, after `linger` without a
new hit; a TCP byte still inside the host (in a qdisc, in a socket's receive queue, or a
send whose sock_send hit comes when sendmsg returns) waits up to `hold` instead, since those
queues can hold it far longer than a linger. Retransmitted groups are flagged,
and dropped (counted) with filter_retrans. The host's rate cap applies to new sampled
bytes; a capped byte's later hits are dropped too, so records are never partial.

A closed TCP byte is remembered for `recent_ns` (LRU-bounded by `max_recent`): a copy seen
again later is a resend too. A forwarder closes a byte at its exit device and has no
retransmit tracepoint, so this is how its second copy gets flagged; a receiver's duplicate
after the app read the byte likewise. A duplicate reaching a receiver before the app reads
the byte leaves the first copy's group waiting for its sock_recv (the read belongs to the
byte, whose first arrival is the one that counts), as a sender's original waits for its
sock_send. The time bound matters: a sequence number repeats after 4 GiB of a flow, so a
later RTO backoff (≥ 400 ms) is not recognised and shows as an unflagged copy.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from latscope.schemas.points import TABLE
from latscope.schemas.records import flow_id

FlowT = tuple[str, int, str, str, int, int]   # proto, family, src, dst, sport, dport
Key = tuple[FlowT, int]                         # flow, seq (TCP) or datagram hash (UDP)

# The flush rules, from the point table (schemas/points.py).
_LAST = {proto: p.name for p in TABLE for proto in p.last_for}   # tcp: sock_recv, udp: ip_in
_EXIT = frozenset(p.name for p in TABLE if p.exit)               # dev_xmit (on an exit device)
_SOCKET = frozenset(p.name for p in TABLE if p.socket)           # passed once per byte
_SEND = next(p.name for p in TABLE if p.socket and p.direction == "tx")    # sock_send
_RECV = next(p.name for p in TABLE if p.socket and p.direction == "rx")    # sock_recv
# Below the socket, only on the host whose TCP sent / received the byte (tcp_tx, ip_out /
# ip_in, tcp_rx): a group holding one of them waits for its socket point.
_SENT_HERE = frozenset(p.name for p in TABLE if p.local and not p.socket and p.direction == "tx")
_DELIVERED_HERE = frozenset(p.name for p in TABLE
                            if p.local and not p.socket and p.direction == "rx")


@dataclass(slots=True)
class Hit:
    point: str
    ts_ns: int
    ifindex: int
    dev: str | None
    netns: int
    cpu: int
    avro: bytes = b""      # this PointHit Avro-encoded; shared by every byte of one range

    def as_record(self) -> dict:
        return {"point": self.point, "ts_ns": self.ts_ns, "ifindex": self.ifindex,
                "dev": self.dev, "netns": self.netns, "cpu": self.cpu}


@dataclass(slots=True)
class Record:
    """One LayerEvent: every hit of one sampled byte on this host, in time order."""
    host: str
    flow: FlowT
    flow_id: str
    seq: int
    retrans: bool
    complete: bool
    hits: list[Hit]

    def as_dict(self) -> dict:
        f = self.flow
        return {"schema_version": 1, "host": self.host, "flow_id": self.flow_id,
                "flow": {"proto": f[0], "family": f[1], "src": f[2], "dst": f[3],
                         "sport": f[4], "dport": f[5]},
                "seq": self.seq, "retrans": self.retrans, "complete": self.complete,
                "hits": [h.as_record() for h in self.hits]}


def _ts(h: Hit) -> int:
    return h.ts_ns


@dataclass(slots=True)
class _Group:
    hits: list[Hit]
    seen: set[tuple[str, int, int]]
    last_ns: int
    retrans: bool = False
    exited: bool = False       # left the host, waiting only for its sock_send hit


@dataclass
class GroupCounters:
    samples: int = 0           # sampled bytes (groups) started
    records: int = 0           # records handed on for publishing
    rate_capped: int = 0       # sampled bytes dropped by the rate cap
    retrans_dropped: int = 0   # retransmitted sampled bytes dropped (filter_retrans)
    retrans: int = 0           # retransmitted sampled bytes seen
    evicted: int = 0           # groups flushed early because max_open was reached


@dataclass
class Grouper:
    host: str
    linger_ns: int = 50_000_000
    hold_ns: int = 5_000_000_000
    rate_cap_per_s: int = 200_000
    filter_retrans: bool = False
    exit_devices: set[tuple[int, int]] = field(default_factory=set)   # (netns, ifindex)
    max_open: int = 500_000
    # Remember closed TCP bytes this long (resends): long enough for fast retransmit and the
    # first RTO (200 ms minimum), short enough that a flow's sequence numbers cannot wrap
    # inside it below ~130 Gbit/s (4 GiB per wrap; a veth here carries 20 Gbit/s, 1.7 s/wrap).
    recent_ns: int = 250_000_000
    max_recent: int = 200_000
    clock: Callable[[], int] = time.monotonic_ns
    counters: GroupCounters = field(default_factory=GroupCounters)

    def __post_init__(self) -> None:
        self._open: OrderedDict[Key, _Group] = OrderedDict()
        self._held: OrderedDict[Key, _Group] = OrderedDict()    # idle, waiting up to hold_ns
        # originals of resent bytes still waiting for their sock_send/sock_recv, up to hold_ns
        self._superseded: OrderedDict[Key, _Group] = OrderedDict()
        self._capped: OrderedDict[Key, int] = OrderedDict()
        self._recent: OrderedDict[Key, int] = OrderedDict()   # closed TCP bytes -> close time
        self._tokens = float(self.rate_cap_per_s)
        self._refill_ns = self.clock()
        self._flow_ids: dict[FlowT, str] = {}

    def _admit(self, now: int) -> bool:
        if now != self._refill_ns:
            cap = self.rate_cap_per_s
            self._tokens += (now - self._refill_ns) * cap / 1e9
            if self._tokens > cap:
                self._tokens = float(cap)
            self._refill_ns = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def add(self, flow: FlowT, seq: int, hit: Hit, out: list[Record],
            now: int | None = None) -> None:
        """One hit of sampled byte (flow, seq); finished records are appended to out.
        `now`: the caller's clock reading for a whole batch (saves a clock call per hit)."""
        key = (flow, seq)
        if now is None:
            now = self.clock()
        opened = self._open
        point = hit.point
        g = opened.get(key)
        if g is None and self._held:
            g = self._held.pop(key, None)
            if g is not None:
                opened[key] = g
        if self._superseded and point in _SOCKET:
            orig = self._superseded.pop(key, None)
            if orig is not None:          # the late socket point of a resent byte's original
                orig.hits.append(hit)
                self._emit(key, orig, orig.exited or point == _RECV, out)
                return
        tag = (point, hit.ifindex, hit.netns)
        again = False
        if g is not None and tag in g.seen:
            # The byte passes a point twice: this is a retransmitted copy (a receiver, which
            # has no retransmit tracepoint, learns it only this way).
            del opened[key]
            if self._from_local_send(flow, g) or self._awaits_recv(flow, g):
                g.last_ns = now           # keep it for its socket point, up to hold
                self._superseded[key] = g
            else:
                self._emit(key, g, False, out)
            g = None
            again = True
        if g is None:
            if key in self._capped:
                return
            if not self._admit(now):
                self.counters.rate_capped += 1
                self._capped[key] = now
                return
            # a socket point is passed once per byte, whatever the copies: never a resend
            if not again and flow[0] == "tcp" and self._recent and point not in _SOCKET:
                closed = self._recent.get(key)
                again = closed is not None and now - closed <= self.recent_ns
            self.counters.samples += 1
            g = _Group([], set(), now, retrans=again)
            if again:
                self.counters.retrans += 1
            opened[key] = g
            if len(opened) > self.max_open:
                old_key, old = opened.popitem(last=False)
                self.counters.evicted += 1
                self._emit(old_key, old, False, out)
        else:
            opened.move_to_end(key)
        g.hits.append(hit)
        g.seen.add(tag)
        g.last_ns = now
        if _LAST.get(flow[0]) == point or (
                point in _EXIT and (hit.netns, hit.ifindex) in self.exit_devices
                and not self._awaits_send(flow, g)):
            del opened[key]
            self._emit(key, g, True, out)
        elif point == _SEND and g.exited:
            del opened[key]
            self._emit(key, g, True, out)

    @staticmethod
    def _from_local_send(flow: FlowT, g: _Group) -> bool:
        """A first transmission by this host's own TCP socket (it passed tcp_tx or ip_out)
        whose sock_send hit is not in yet: the kernel reports it when sendmsg returns, often
        after the byte already left."""
        return flow[0] == "tcp" and not g.retrans and any(t[0] in _SENT_HERE for t in g.seen) \
            and not any(t[0] == _SEND for t in g.seen)

    @staticmethod
    def _awaits_recv(flow: FlowT, g: _Group) -> bool:
        """A first copy delivered to this host's TCP (ip_in/tcp_rx), not yet read."""
        return flow[0] == "tcp" and not g.retrans and any(
            t[0] in _DELIVERED_HERE for t in g.seen)

    def _awaits_send(self, flow: FlowT, g: _Group) -> bool:
        """At the exit device: wait for the sock_send hit (then `exited` completes it)."""
        if self._from_local_send(flow, g):
            g.exited = True
            return True
        return False

    def mark_retrans(self, flow: FlowT, seq: int, out: list[Record]) -> None:
        """The sender's TCP retransmitted this byte (the tracepoint fires after the resend's
        own hits): flag the open group, which holds those hits."""
        key = (flow, seq)
        g = self._open.get(key) or self._held.get(key)
        if g is not None and not g.retrans:
            g.retrans = True
            self.counters.retrans += 1
            if g.exited:      # it left, waiting for a sock_send a resend never has
                if self._open.pop(key, None) is None:
                    del self._held[key]
                self._emit(key, g, True, out)

    def expire(self, out: list[Record], now: int | None = None) -> None:
        """Flush groups without a hit for `linger`."""
        now = self.clock() if now is None else now
        limit = now - self.linger_ns
        while self._open:
            key, g = next(iter(self._open.items()))
            if g.last_ns > limit:
                break
            del self._open[key]
            if self._inside_host(key[0], g):
                self._held[key] = g
            else:
                self._emit(key, g, False, out)
        hold_limit = now - self.hold_ns
        for groups in (self._held, self._superseded):
            while groups:
                key, g = next(iter(groups.items()))
                if g.last_ns > hold_limit:
                    break
                del groups[key]
                self._emit(key, g, False, out)
        while self._capped:
            key, t = next(iter(self._capped.items()))
            if t > limit:
                break
            del self._capped[key]
        recent_limit = now - self.recent_ns
        while self._recent:
            key, t = next(iter(self._recent.items()))
            if t > recent_limit:
                break
            del self._recent[key]

    @staticmethod
    def _inside_host(flow: FlowT, g: _Group) -> bool:
        """A TCP byte of the first transmission, not yet complete, is still in this host
        (qdisc, socket queue, or a sendmsg not yet returned): worth holding."""
        return flow[0] == "tcp" and not g.retrans

    def flush_all(self, out: list[Record]) -> None:
        for groups in (self._superseded, self._held, self._open):
            while groups:
                key, g = groups.popitem(last=False)
                self._emit(key, g, False, out)

    @property
    def open_groups(self) -> int:
        return len(self._open) + len(self._held) + len(self._superseded)

    def _emit(self, key: Key, g: _Group, complete: bool, out: list[Record]) -> None:
        if key[0][0] == "tcp":
            recent = self._recent
            recent[key] = g.last_ns
            recent.move_to_end(key)
            if len(recent) > self.max_recent:
                recent.popitem(last=False)
        if g.retrans and self.filter_retrans:
            self.counters.retrans_dropped += 1
            return
        flow, seq = key
        fid = self._flow_ids.get(flow)
        if fid is None:
            if len(self._flow_ids) > 100_000:     # bounded: a cache, not a flow table
                self._flow_ids.clear()
            fid = self._flow_ids[flow] = flow_id(
                {"proto": flow[0], "src": flow[2], "dst": flow[3], "sport": flow[4],
                 "dport": flow[5]})
        g.hits.sort(key=_ts)
        self.counters.records += 1
        out.append(Record(self.host, flow, fid, seq, g.retrans, complete, g.hits))
