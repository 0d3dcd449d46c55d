"""Group the point hits of one sampled byte on this host into LayerEvent records (design §3).

One record per copy of a byte that passes the host; normally a byte has one copy, so one
record per (sampled byte, host). A record is flushed when its copy reaches this host's last
point (sock_recv, for TCP and UDP; dev_xmit on a device that leaves the host), but a copy
sent by a local TCP socket first waits for its sock_send hit (the kernel reports it when
sendmsg returns, often after the byte left: PointDef.last_for / .exit in schemas/points.py;
a UDP datagram's sock_send comes before its ip_out). Otherwise it is flushed, incomplete,
after `linger` without a new hit;
a TCP byte still inside the host (in a qdisc, in a socket's receive queue, or a send whose
sock_send hit comes when sendmsg returns) waits up to `hold` instead, since those queues can
hold it far longer than a linger. The host's rate cap applies to new sampled bytes; a capped
byte's later hits are dropped too, so records are never partial.

Resends. A TCP byte the sender transmitted more than once is *resent*, and then every
record of it on this host is flagged (`retrans`), the original copy's included, and dropped
(counted) with filter_retrans. A host learns it from:
- the sender's mark (opt-in, agent.resend_mark, as it changes the packets): the sender's
  tcp_tx (sock_ops) writes a TCP option into every resent segment (producers/bpf/tcp_tx.bpf.c),
  so each point on every host that parses the
  segment reports the hit as resent (`add(..., resent=True)`). Resent hits form copies of
  their own: hits are never mixed between the original and a resend, even when the two
  overtake each other inside a host (the cause of the records that lacked their last RX
  points: see add());
- without a mark (by default, or the sender runs no agent, or its kernel lacks the sock_ops
  hook): the sender's tcp_tx flags its own hit of a resend all the same; elsewhere the byte
  passes a point it already passed (a second copy), a copy of a byte closed less than
  `recent_ns` ago, or the sender's tcp_retransmit_skb tracepoint (mark_retrans).
A copy's record is flagged if the byte is known to be resent when the record is published;
an original copy that completed before any resend appeared (a spurious retransmission, or
a loss further down the path) is published unflagged, and is a true sample of that copy.

A UDP datagram (seq: its hash) has the same socket points (producers/bpf/udp_sock.bpf.h):
it completes at sock_recv (at ip_in where no sock_recv is attached) and, delivered here,
is held for its read like a TCP byte; it is never resent, and TCP's points are never its
gap.

Socket points belong to the byte, not to a copy: sock_send to the original copy, sock_recv
to the copy that reached this host's TCP first (TCP discards later ones). A socket hit for
a byte whose records were published already (flushed at `hold` while waiting for it) is
dropped and counted (`late_socket`), never published as a one-point record.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from latscope.producers.layout import WAIT_CAUSES
from latscope.schemas.points import TABLE
from latscope.schemas.records import flow_id

FlowT = tuple[str, int, str, str, int, int]   # proto, family, src, dst, sport, dport
WAIT_KEYS = tuple(c + "_us" for c in WAIT_CAUSES)   # PointHit.wait's fields (SocketWait)
Key = tuple[FlowT, int]                         # flow, seq (TCP) or datagram hash (UDP)
GKey = tuple[FlowT, int, int]                   # flow, seq, copy (0: the original)

# The flush rules, from the point table (schemas/points.py).
_LAST = {proto: p.name for p in TABLE for proto in p.last_for}   # tcp, udp: sock_recv
_EXIT = frozenset(p.name for p in TABLE if p.exit)               # dev_xmit (on an exit device)
_SOCKET = frozenset(p.name for p in TABLE if p.socket)           # passed once per byte
_SEND = next(p.name for p in TABLE if p.socket and p.direction == "tx")    # sock_send
_RECV = next(p.name for p in TABLE if p.socket and p.direction == "rx")    # sock_recv
# Below the socket, only on the host whose TCP sent / received the byte (tcp_tx, ip_out /
# ip_in, tcp_rx): a group holding one of them waits for its socket point.
_SENT_HERE = frozenset(p.name for p in TABLE if p.local and not p.socket and p.direction == "tx")
_DELIVERED_HERE = frozenset(p.name for p in TABLE
                            if p.local and not p.socket and p.direction == "rx")
_TCP_RX = "tcp_rx"
_QUEUE = "dev_queue"                                    # before a qdisc
_READ = frozenset({_RECV})
_TAKES_READ = _DELIVERED_HERE | _READ     # a copy that reached TCP here and gave up waiting
# A datagram's last point where no sock_recv is attached (the kernel lacks its hooks).
_UDP_UNREAD_LAST = "ip_in"
_FLUSH = frozenset({_SEND, *_LAST.values(), *_EXIT, _UDP_UNREAD_LAST})  # may complete a group
# The points a hit implies on the same device (grouping._gaps), and on the same host.
_IMPLIES = {"ip_pre": ("dev_rx",), "ip_post": ("dev_queue", "dev_xmit"),
            "dev_queue": ("dev_xmit",)}
_IMPLIES_LOCAL = ((_RECV, ("ip_in", _TCP_RX)), (_SEND, ("tcp_tx", "ip_out")))
_TCP_LAYER = frozenset(p.name for p in TABLE if p.layer == "tcp")   # no UDP datagram passes


@dataclass(slots=True)
class Hit:
    point: str
    ts_ns: int
    ifindex: int
    dev: str | None
    netns: int
    cpu: int
    # socket-wait causes, µs in layout.WAIT_CAUSES order (tcp_tx, sock_recv of a byte its
    # socket tracked); None: not measured
    wait: tuple[int, ...] | None = None
    avro: bytes = b""      # this PointHit Avro-encoded; shared by every byte of one range

    def as_record(self) -> dict:
        return {"point": self.point, "ts_ns": self.ts_ns, "ifindex": self.ifindex,
                "dev": self.dev, "netns": self.netns, "cpu": self.cpu,
                "wait": None if self.wait is None else
                dict(zip(WAIT_KEYS, self.wait, strict=True))}


@dataclass(slots=True)
class Record:
    """One LayerEvent: every hit of one copy of a sampled byte on this host, in time order."""
    host: str
    flow: FlowT
    flow_id: str
    seq: int
    retrans: bool
    complete: bool
    hits: list[Hit]

    def as_dict(self) -> dict:
        f = self.flow
        return {"schema_version": 2, "host": self.host, "flow_id": self.flow_id,
                "flow": {"proto": f[0], "family": f[1], "src": f[2], "dst": f[3],
                         "sport": f[4], "dport": f[5]},
                "seq": self.seq, "retrans": self.retrans, "complete": self.complete,
                "hits": [h.as_record() for h in self.hits]}


def flow_id_of(flow: FlowT) -> str:
    """The flow id of a flow tuple (schemas.records.flow_id)."""
    return flow_id({"proto": flow[0], "src": flow[2], "dst": flow[3], "sport": flow[4],
                    "dport": flow[5]})


def _ts(h: Hit) -> int:
    return h.ts_ns


@dataclass(slots=True)
class _Group:
    """The hits of one copy of a byte."""
    hits: list[Hit]
    seen: set[tuple[str, int, int]]
    last_ns: int
    exited: bool = False       # left the host (or reached the app), waits only for sock_send


@dataclass(slots=True)
class _Resent:
    """A TCP byte this host knows to be resent: which copy takes which hits."""
    copies: int = 1            # copy numbers in use: 0 .. copies-1 (0: the original)
    plain: int = 0             # the copy taking unmarked hits
    marked: int = -1           # the copy taking marked hits (-1: none yet)
    read: bool = False         # a copy got this host's read (or gave up waiting for it)


@dataclass
class GroupCounters:
    samples: int = 0           # sampled bytes started (each resent copy counts too)
    records: int = 0           # records handed on for publishing
    rate_capped: int = 0       # sampled bytes dropped by the rate cap
    retrans: int = 0           # resent sampled bytes seen (once per byte)
    retrans_dropped: int = 0   # flagged records dropped (filter_retrans)
    evicted: int = 0           # groups flushed early because max_open was reached
    late_socket: int = 0       # socket hits of a byte already published, dropped
    gaps: int = 0              # records that reached their last point lacking a point
    overrun: int = 0           # records published while the ring buffer had just lost hits
    restrided: int = 0         # TCP records flushed because the stride rose past their byte


@dataclass
class Grouper:
    host: str
    linger_ns: int = 50_000_000
    hold_ns: int = 1_000_000_000
    rate_cap_per_s: int = 200_000
    filter_retrans: bool = False
    exit_devices: set[tuple[int, int]] = field(default_factory=set)   # (netns, ifindex)
    max_open: int = 500_000
    # Remember closed TCP bytes this long (resends without the sender's mark): long enough
    # for fast retransmit and the first RTO (200 ms minimum), short enough that a flow's
    # sequence numbers cannot wrap inside it below ~130 Gbit/s (4 GiB per wrap).
    recent_ns: int = 250_000_000
    max_recent: int = 200_000
    # Bytes published without the socket hit they waited for are remembered this long, so
    # that hit is dropped (counted) when it comes: a sendmsg or a read may take that long.
    owed_ns: int = 60_000_000_000
    # A TCP byte the app handed over that TCP has not sent yet (a full window, a slow peer)
    # waits this long: no other host has seen it, so the join window does not bound it.
    queued_ns: int = 60_000_000_000
    # The attached points: a record that reached its last point but lacks one of them on
    # its way is flagged incomplete and counted (gaps, gap_points), never passed as whole.
    points: frozenset[str] = frozenset(p.name for p in TABLE)
    # Does the attached sock_recv hook see UDP reads (schemas/points.py Hook.udp)? If not,
    # a datagram completes at ip_in and waits for no read.
    udp_reads: bool = True
    check_gaps: bool = True
    # Set by the agent while the ring buffer may have lost hits of the bytes still being
    # grouped (it lost some lately): every record then comes out incomplete (counted), as
    # a byte's hit can be lost without any trace in what arrived.
    overrun: bool = False
    clock: Callable[[], int] = time.monotonic_ns
    counters: GroupCounters = field(default_factory=GroupCounters)

    def __post_init__(self) -> None:
        self._open: OrderedDict[GKey, _Group] = OrderedDict()
        self._held: OrderedDict[GKey, _Group] = OrderedDict()   # idle, waiting up to hold_ns
        # handed over by the app but not sent yet (only a sock_send hit), up to queued_ns
        self._queued: OrderedDict[GKey, _Group] = OrderedDict()
        self._resent: dict[Key, _Resent] = {}                   # resent bytes with open copies
        self._capped: OrderedDict[Key, int] = OrderedDict()
        # closed TCP bytes -> (close time, _Resent if it was resent, read: see _Resent)
        self._recent: OrderedDict[Key, tuple[int, _Resent | None, bool]] = OrderedDict()
        self._owed: OrderedDict[Key, int] = OrderedDict()      # published without a socket hit
        self._tokens = float(self.rate_cap_per_s)
        self._refill_ns = self.clock()
        self._flow_ids: dict[FlowT, str] = {}
        self.gap_points: dict[str, int] = {}      # point -> records that lacked it
        # _gaps' rules for the attached points, recomputed when they change
        self._implied: tuple[frozenset[str] | None, dict[str, tuple[str, ...]],
                             tuple[tuple[str, tuple[str, ...]], ...]] = (None, {}, ())

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

    def _group(self, gk: GKey) -> _Group | None:
        """The open group of one copy (a held one is reopened: it takes hits again)."""
        g = self._open.get(gk)
        if g is None and (self._held or self._queued):
            g = self._held.pop(gk, None) or self._queued.pop(gk, None)
            if g is not None:
                self._open[gk] = g
        return g

    # -- hits
    def add(self, flow: FlowT, seq: int, hit: Hit, out: list[Record],
            now: int | None = None, resent: bool = False) -> None:
        """One hit of sampled byte (flow, seq); finished records are appended to out.
        `now`: the caller's clock reading for a whole batch (saves a clock call per hit);
        `resent`: the hit's segment carries the sender's resend mark."""
        if now is None:
            now = self.clock()
        if resent or (self._resent and (flow, seq) in self._resent):
            self._add_copy(flow, seq, hit, out, now, resent)
            return
        # The usual case: the byte's only copy so far.
        gk = (flow, seq, 0)
        g = self._open.get(gk)
        if g is None and (self._held or self._queued):
            g = self._held.pop(gk, None) or self._queued.pop(gk, None)
            if g is not None:
                self._open[gk] = g
        point = hit.point
        tag = (point, hit.ifindex, hit.netns)
        if g is not None:
            if tag in g.seen:
                if flow[0] == "tcp":
                    # An unmarked second copy (the sender runs no agent): a resend.
                    self._add_copy(flow, seq, hit, out, now, resent)
                    return
                del self._open[gk]              # UDP: an equal datagram, its own sample
                self._emit(gk, g, False, out)
                g = None
            else:
                self._open.move_to_end(gk)
        if g is None:
            key = (flow, seq)
            if flow[0] == "tcp" and (self._recent or self._owed):
                if point in _SOCKET:
                    if key in self._owed:
                        self.counters.late_socket += 1       # its record is out already
                        return
                    # (one agent at both ends without tcp_tx/ip_out: a sock_send after the
                    # read starts a record of its own, as it could not be waited for)
                elif key in self._recent and now - self._recent[key][0] <= self.recent_ns:
                    self._add_copy(flow, seq, hit, out, now, resent)   # a resend
                    return
            if not self._start(key, now):
                return
            g = self._open[gk] = _Group([], set(), now)
            self._evict(out)
        # _append, inlined: the hot path
        g.hits.append(hit)
        g.seen.add(tag)
        g.last_ns = now
        if point in _FLUSH and (point not in _EXIT or (hit.netns, hit.ifindex) in self.exit_devices):
            self._flush_at(gk, g, hit, out)

    def _start(self, key: Key, now: int) -> bool:
        """A new sampled byte on this host: admitted by the rate cap, else dropped whole."""
        if key in self._capped:
            return False
        if not self._admit(now):
            self.counters.rate_capped += 1
            self._capped[key] = now
            return False
        self.counters.samples += 1
        return True

    def _evict(self, out: list[Record]) -> None:
        if len(self._open) > self.max_open:
            old_key, old = self._open.popitem(last=False)
            self.counters.evicted += 1
            self._emit(old_key, old, False, out)

    def _append(self, gk: GKey, g: _Group, hit: Hit, now: int, out: list[Record]) -> None:
        """Add the hit to its copy's group; flush the group if that was its last point."""
        g.hits.append(hit)
        g.seen.add((hit.point, hit.ifindex, hit.netns))
        g.last_ns = now
        if hit.point in _FLUSH:
            self._flush_at(gk, g, hit, out)

    def _flush_at(self, gk: GKey, g: _Group, hit: Hit, out: list[Record]) -> None:
        """The hit may be its copy's last point on this host: flush the group if so."""
        point = hit.point
        flow = gk[0]
        if point == _SEND:
            done = g.exited
        elif _LAST.get(flow[0]) == point or (
                point == _UDP_UNREAD_LAST and flow[0] != "tcp" and not self._reads_udp()):
            done = not self._awaits_send(gk, g)
        elif point in _EXIT and (hit.netns, hit.ifindex) in self.exit_devices:
            done = not self._awaits_send(gk, g)
        else:
            return
        if done:
            del self._open[gk]
            self._emit(gk, g, True, out)

    def _add_copy(self, flow: FlowT, seq: int, hit: Hit, out: list[Record], now: int,
                  resent: bool) -> None:
        """A hit of a resent byte: find (or start) the copy it belongs to. Marked hits go to
        the newest marked copy, unmarked ones to the newest unmarked copy; a hit at a point
        its copy already passed starts the next copy."""
        key = (flow, seq)
        if key in self._capped:
            return
        r = self._resent.get(key)
        if r is None:
            old = self._recent.pop(key, None)
            r = old[1] if old is not None and old[1] is not None else \
                _Resent(read=old is not None and old[2])
            if old is None or old[1] is None:
                self.counters.retrans += 1
            self._resent[key] = r
        point = hit.point
        if point in _SOCKET:
            gk = self._socket_copy(key, point, r)
            if gk is None:
                self.counters.late_socket += 1
                self._forget_if_idle(key, r, now)
                return
            g = self._group(gk)
            assert g is not None
            self._open.move_to_end(gk)
            self._append(gk, g, hit, now, out)
            if point == _SEND and gk in self._open and not g.exited:
                # The original's sock_send, after a resend: that copy died in this host
                # (TCP sends again only what left it or was dropped), nothing more comes.
                del self._open[gk]
                self._emit(gk, g, False, out)
            return
        c = r.marked if resent else r.plain
        g = self._group((flow, seq, c)) if c >= 0 else None
        if g is None or (point, hit.ifindex, hit.netns) in g.seen:
            c = r.copies                          # a new copy: the first marked one, or a repeat
            r.copies += 1
            if resent:
                r.marked = c
            else:
                r.plain = c
            g = None
        gk = (flow, seq, c)
        if g is None:
            if any(self._peek((flow, seq, i)) for i in range(r.copies) if i != c):
                self.counters.samples += 1        # another copy of a byte admitted already
            elif not self._start(key, now):
                self._forget_if_idle(key, r, now)
                return
            g = self._open[gk] = _Group([], set(), now)
            self._evict(out)
        else:
            self._open.move_to_end(gk)
        self._append(gk, g, hit, now, out)

    def _peek(self, gk: GKey) -> _Group | None:
        return self._open.get(gk) or self._held.get(gk) or self._queued.get(gk)

    def _socket_copy(self, key: Key, point: str, r: _Resent) -> GKey | None:
        """The open copy a socket hit belongs to: sock_send to the original; sock_recv to the
        copy that reached this host's TCP first."""
        flow, seq = key
        if point == _SEND:
            gk = (flow, seq, 0)
            return gk if self._peek(gk) is not None else None
        best: tuple[int, GKey] | None = None
        fallback: GKey | None = None
        for c in range(r.copies):
            gk = (flow, seq, c)
            g = self._peek(gk)
            if g is None:
                continue
            if fallback is None:
                fallback = gk
            ts = [h.ts_ns for h in g.hits if h.point == _TCP_RX] or \
                 [h.ts_ns for h in g.hits if h.point in _DELIVERED_HERE]
            if ts and (best is None or min(ts) < best[0]):
                best = (min(ts), gk)
        return best[1] if best is not None else fallback

    def mark_retrans(self, flow: FlowT, seq: int, out: list[Record],
                     now: int | None = None) -> None:
        """The sender's TCP retransmitted this byte (the tracepoint fires after the resend's
        own hits): the byte is resent. Needed where segments carry no mark."""
        key = (flow, seq)
        if key in self._resent:
            return
        now = self.clock() if now is None else now
        gk = (flow, seq, 0)
        g = self._group(gk)
        old = self._recent.get(key)
        if g is None:
            if old is not None and old[1] is None:     # closed: remembered as resent
                self._recent[key] = (old[0], _Resent(read=old[2]), old[2])
                self.counters.retrans += 1
            return
        self._resent[key] = _Resent()
        self.counters.retrans += 1
        if g.exited:
            # It left, waiting for a sock_send: with no mark and no earlier copy open, this
            # group is the resend itself (the original closed long ago); it never gets one.
            del self._open[gk]
            self._emit(gk, g, True, out, resend=True)

    # -- flushing
    def _awaits_send(self, gk: GKey, g: _Group) -> bool:
        """At its last point: a first transmission by this host's own TCP socket whose
        sock_send hit is not in yet (the kernel reports it when sendmsg returns, often after
        the byte left) waits for it, `exited`."""
        if gk[2] == 0 and gk[0][0] == "tcp":
            names = {t[0] for t in g.seen}
            if _SEND not in names and not _SENT_HERE.isdisjoint(names):
                g.exited = True
                return True
        return False

    def _reads_udp(self) -> bool:
        """Are UDP reads reported here (sock_recv attached, by a hook that sees them)?"""
        return self.udp_reads and _RECV in self.points

    def _waits(self, gk: GKey, g: _Group) -> bool:
        """Idle for a linger: is the copy still inside the host (qdisc, socket queue, or a
        sendmsg not yet returned), worth holding up to `hold`?"""
        flow, seq, c = gk
        if flow[0] != "tcp":
            # a datagram delivered here waits for its read, when reads are seen
            names = {t[0] for t in g.seen}
            return self._reads_udp() and bool(names & _DELIVERED_HERE) and _RECV not in names
        r = self._resent.get((flow, seq))
        if r is None:
            return True          # the only copy: anywhere in the host, or owed a socket hit
        points = {t[0] for t in g.seen}
        if points & _DELIVERED_HERE and _RECV not in points:
            # reached TCP here: owed the read only if no copy took it and this one got there
            # first (TCP discards the later copy)
            return not r.read and self._socket_copy((flow, seq), _RECV, r) == gk
        # the original may still be in the host (a deep qdisc) or owed its sock_send; a
        # resend still in a qdisc (its last hit a dev_queue) may leave yet; one that left
        # or died elsewhere owes nothing
        return c == 0 or g.hits[-1].point == _QUEUE

    def expire(self, out: list[Record], now: int | None = None) -> None:
        """Flush groups without a hit for `linger` (or `hold`, when worth holding)."""
        now = self.clock() if now is None else now
        limit = now - self.linger_ns
        while self._open:
            gk, g = next(iter(self._open.items()))
            if g.last_ns > limit:
                break
            # still open while _waits looks: it compares the byte's copies, this one included
            queued = gk[0][0] == "tcp" and all(t[0] == _SEND for t in g.seen)
            held = not queued and self._waits(gk, g)
            del self._open[gk]
            if queued:
                self._queued[gk] = g
            elif held:
                self._held[gk] = g
            else:
                self._emit(gk, g, False, out)
        hold_limit = now - self.hold_ns
        for groups, limit_ns in ((self._held, hold_limit), (self._queued, now - self.queued_ns)):
            while groups:
                gk, g = next(iter(groups.items()))
                if g.last_ns > limit_ns:
                    break
                del groups[gk]
                self._emit(gk, g, False, out, owed=True)
        for memo, horizon in ((self._capped, self.linger_ns), (self._owed, self.owed_ns)):
            while memo:
                key, t = next(iter(memo.items()))
                if t > now - horizon:
                    break
                del memo[key]
        recent_limit = now - self.recent_ns
        while self._recent:
            key, (t, _, _) = next(iter(self._recent.items()))
            if t > recent_limit:
                break
            del self._recent[key]

    def flush_all(self, out: list[Record]) -> None:
        for groups in (self._queued, self._held, self._open):
            while groups:
                gk, g = groups.popitem(last=False)
                self._emit(gk, g, False, out)

    def restride(self, size: int, out: list[Record]) -> None:
        """The stride is now `size` (a coarser stride level): a TCP byte off it gets no
        further hit, as ranges are expanded at `size` from the batch that follows; its
        copies are flushed now, incomplete and counted, rather than waiting for a hit
        that cannot come (a byte queued in its socket would wait for queued_ns)."""
        for groups in (self._queued, self._held, self._open):
            for gk in [gk for gk in groups if gk[0][0] == "tcp" and gk[1] % size]:
                self.counters.restrided += 1
                self._emit(gk, groups.pop(gk), False, out)

    @property
    def open_groups(self) -> int:
        return len(self._open) + len(self._held) + len(self._queued)

    def _gaps(self, g: _Group, tcp: bool) -> list[str]:
        """Points a copy that reached its last point must have passed but has no hit for
        (design: every point for every byte; such a record is flagged incomplete). A packet
        that passed ip_pre on a device came through its dev_rx; one that passed ip_post on
        a device went through its dev_queue and dev_xmit, and a dev_queue leads to a
        dev_xmit; a byte read by the app (sock_recv) passed ip_in and tcp_rx; a byte of a
        local socket that left passed tcp_tx and ip_out (a UDP datagram: no TCP points).
        Only attached points count."""
        if self._implied[0] is not self.points:
            want = self.points
            self._implied = (want, {p: tuple(n for n in need if n in want)
                                    for p, need in _IMPLIES.items()},
                             tuple((p, tuple(n for n in need if n in want))
                                   for p, need in _IMPLIES_LOCAL))
        _, implies, local = self._implied
        seen = g.seen
        names = {t[0] for t in seen}
        missing: list[str] = []
        if not names.isdisjoint(implies):
            for p, ifindex, netns in seen:
                need = implies.get(p)
                if need:
                    for n in need:
                        if (n, ifindex, netns) not in seen:
                            missing.append(n)
        for p, need in local:
            if p in names:
                missing += [n for n in need if n not in names and (tcp or n not in _TCP_LAYER)]
        return missing

    def _forget_if_idle(self, key: Key, r: _Resent, now: int) -> None:
        """A resent byte with no copy open any more: remember it as a closed, resent byte."""
        flow, seq = key
        if not any(self._peek((flow, seq, c)) for c in range(r.copies)):
            del self._resent[key]
            self._recent[key] = (now, r, r.read)
            self._recent.move_to_end(key)
            if len(self._recent) > self.max_recent:
                self._recent.popitem(last=False)

    def _emit(self, gk: GKey, g: _Group, complete: bool, out: list[Record],
              owed: bool = False, resend: bool = False) -> None:
        """Hand a copy's record on. Flagged: a resend (copy > 0), or the original of a
        resent byte that did not complete here (it died, or TCP discarded it). An original
        that completed here before the resend is a true sample of that copy, published
        unflagged, as on every host it crossed."""
        flow, seq, c = gk
        key = (flow, seq)
        retrans = c > 0 or resend
        if self.overrun:
            complete = False
        if complete and self.check_gaps:
            missing = self._gaps(g, flow[0] == "tcp")
            if missing:
                complete = False
                self.counters.gaps += 1
                for p in missing:
                    self.gap_points[p] = self.gap_points.get(p, 0) + 1
        if flow[0] == "tcp":
            # The byte's read is taken: this copy got it, or reached TCP here and gave up
            # waiting for it (owed). A later copy then waits for no read.
            read = g.hits[-1].point == _RECV or not (
                _TAKES_READ if owed else _READ).isdisjoint([t[0] for t in g.seen])
            r = self._resent.get(key)
            if r is not None:
                retrans = retrans or not complete
                r.read = r.read or read
                self._forget_if_idle(key, r, g.last_ns)
            else:
                recent = self._recent
                recent[key] = (g.last_ns, None, read)
                recent.move_to_end(key)
                if len(recent) > self.max_recent:
                    recent.popitem(last=False)
            if owed:
                points = {t[0] for t in g.seen}
                if _SOCKET.isdisjoint(points) and points & (_SENT_HERE | _DELIVERED_HERE):
                    self._owed[key] = g.last_ns
                    if len(self._owed) > self.max_recent:
                        self._owed.popitem(last=False)
        if retrans and self.filter_retrans:
            self.counters.retrans_dropped += 1
            return
        fid = self._flow_ids.get(flow)
        if fid is None:
            if len(self._flow_ids) > 100_000:     # bounded: a cache, not a flow table
                self._flow_ids.clear()
            fid = self._flow_ids[flow] = flow_id_of(flow)
        g.hits.sort(key=_ts)
        self.counters.records += 1
        self.counters.overrun += self.overrun
        out.append(Record(self.host, flow, fid, seq, retrans, complete, g.hits))
