"""The native data path (producers/native/, AgentSettings.native) against the Python one
(Agent._group_py, Grouper, LayerEventEncoder.body, the reference): the same ring-buffer
events, batch by batch at the same `now`, must give the same LayerEvent bodies in the same
order, at the same batch, and the same counters. Order is compared exactly: the C keeps
the Grouper's OrderedDict orders to the letter, so no reordering is legitimate.

Pure CPU: events are packed with the layout parsed from producers/bpf/latscope.h, as the
probes write them; no kernel, no broker.
"""

from __future__ import annotations

import ctypes
import ipaddress
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from latscope.bpf._native import ring_pending, ring_read, ring_span
from latscope.producers import layout
from latscope.producers.agent import Agent, AgentSettings
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Grouper
from latscope.producers.native_path import NativeGrouper
from latscope.producers.publish import encoded
from latscope.producers.sampling import sampled_bytes
from latscope.schemas import codec

T0 = 5_000_000_000_000          # the clock when the agents are built (rate cap refill)
MS = 1_000_000
NS = 4026531840                 # the netns inode of every hit
EXIT = 3                        # the exit device's ifindex (veth0)
SIZE = 1000                     # sampling stride: several sampled bytes per range
SPACE = 1 << 32
REV = layout.POINT_NAMES_REV
TX = ("tcp_tx", "ip_out", "ip_post", "dev_queue", "dev_xmit")
RX = ("dev_rx", "ip_pre", "ip_in", "tcp_rx")


def _a(s: str) -> bytes:
    return ipaddress.ip_address(s).packed.ljust(16, b"\0")


@dataclass(frozen=True)
class Flow:
    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    family: int
    proto: int = 6


V4 = Flow(_a("10.1.0.1"), _a("10.1.0.2"), 40000, 5201, 4)
# the same flow tuple from other raw bytes (junk after the IPv4 address): one flow to both
V4_JUNK = Flow(_a("10.1.0.1")[:4] + b"\xee" * 12, _a("10.1.0.2"), 40000, 5201, 4)
V6 = Flow(_a("fd00:1::1"), _a("fd00:2::2"), 40001, 5201, 6)
MAPPED = Flow(_a("::ffff:10.1.0.1"), _a("::ffff:10.2.0.2"), 40002, 443, 6)
UDP = Flow(_a("10.1.0.1"), _a("10.1.0.2"), 5353, 53, 4, 17)
UDP6 = Flow(_a("fd00:1::1"), _a("fd00:2::2"), 5353, 53, 6, 17)
TCP_FLOWS = (V4, V4_JUNK, V6, MAPPED)


def ev(point: str, seq: int, length: int = 1, *, flow: Flow = V4, ts: int = 0,
       ifindex: int | None = None, netns: int = NS, dev: bytes | None = None, cpu: int = 1,
       flags: int = 0, wait: tuple[int, ...] | None = None) -> bytes:
    """One packed ls_event. Socket and TCP points have no device; the others default to
    the exit device (ifindex EXIT, veth0). wait: socket-wait causes (µs, layout order)."""
    local = point.startswith(("sock_", "tcp_")) or point == "retrans"
    if ifindex is None:
        ifindex = 0 if local else EXIT
    if dev is None:
        dev = b"" if local or point == "xdp" else b"veth%d" % ifindex
    if flow.proto == 17:
        flags |= layout.FLAG_UDP
    v = {"ts_ns": ts, "netns": netns, "saddr": flow.saddr, "daddr": flow.daddr,
         "seq": seq % SPACE, "len": length, "ifindex": ifindex, "cpu": cpu,
         "sport": flow.sport, "dport": flow.dport,
         "point": layout.RETRANS if point == "retrans" else REV[point],
         "family": flow.family, "proto": flow.proto, "flags": flags, "dev": dev}
    if wait is not None:
        v["flags"] |= layout.FLAG_WAIT
    v |= {"wait_" + c: w for c, w in zip(layout.WAIT_CAUSES, wait or (0,) * len(
        layout.WAIT_CAUSES), strict=True)}
    return layout.EVENT_STRUCT.pack(*(v[n] for n in layout.EVENT.names))


Step = tuple[int, list[bytes], bool, "int | None"]


@dataclass
class Feed:
    """Batches of events, each read at `now`, optionally followed by an expiry tick; a
    batch may come with a new stride level, set before it is read (on the stride thread,
    between two reads) and followed after it (Agent.follow_stride), as Agent.run does."""
    now: int = T0 + 1000
    steps: list[Step] = field(default_factory=list)

    def batch(self, events: list[bytes], expire: bool = True, dt_ns: int = MS,
              level: int | None = None) -> Feed:
        self.now += dt_ns
        self.steps.append((self.now, list(events), expire, level))
        return self

    def wait(self, dt_ns: int) -> Feed:
        """Time passes, then an expiry tick with no events."""
        return self.batch([], True, dt_ns)


class MemRing:
    """A BPF ring buffer's memory as the kernel lays it out (tools/lib/bpf/ringbuf.c):
    consumer and producer positions, 8-byte record headers (length, BUSY and DISCARD
    bits), records 8-byte aligned, the data area twice back to back so a record crossing
    the end is contiguous. Built by hand here, so the in-place reader is held to the
    protocol, not to itself; small, so batches wrap around it."""

    BUSY, DISCARD = 1 << 31, 1 << 30

    def __init__(self, size: int) -> None:
        self.size = size
        self.cons, self.prod = ctypes.c_uint64(0), ctypes.c_uint64(0)
        self.data = ctypes.create_string_buffer(2 * size)
        self.busy_at: int | None = None

    def _write(self, pos: int, raw: bytes) -> None:
        for i, b in enumerate(raw):
            at = (pos + i) % self.size
            self.data[at] = self.data[at + self.size] = b

    def put(self, rec: bytes, flags: int = 0) -> int:
        pos = self.prod.value
        step = (len(rec) + 8 + 7) & ~7
        assert pos + step - self.cons.value <= self.size, "the test's ring is too small"
        self._write(pos, struct.pack("<II", len(rec) | flags, 0))
        self._write(pos + 8, rec)
        self.prod.value = pos + step
        return pos

    def batch(self, events: list[bytes]) -> int:
        """Release the last batch's trailing record as discarded, write these events, a
        discarded one among them, and a record still being written (BUSY) after them,
        which every reader must stop at; returns where the events end."""
        if self.busy_at is not None:
            self._write(self.busy_at, struct.pack("<I", 8 | self.DISCARD))
        for i, e in enumerate(events):
            if i == len(events) // 2:
                self.put(b"\xff" * 24, self.DISCARD)
            self.put(e)
        end = self.prod.value
        self.busy_at = self.put(b"\xee" * 8, self.BUSY)
        return end

    @property
    def addresses(self) -> tuple[int, int, int, int]:
        return (ctypes.addressof(self.cons), ctypes.addressof(self.prod),
                ctypes.addressof(self.data), self.size - 1)


@dataclass
class Outcome:
    records: list[tuple[str, bytes, int]]
    counters: Any
    gap_points: dict[str, int]
    agent: Any


def _agents(**kw: Any) -> tuple[Agent, Agent]:
    exits = kw.pop("exit_devices", {(NS, EXIT)})
    points = kw.pop("points", None)
    udp_reads = kw.pop("udp_reads", True)
    xdp = kw.pop("xdp_names", {})
    s = {"host": "h1", "sample_size": SIZE, "rate_cap_per_s": 10**9} | kw
    pair = []
    for native in (False, True):
        a = Agent(AgentSettings(**s, native=native), clock=lambda: T0)
        assert isinstance(a.grouper, NativeGrouper if native else Grouper)
        a.grouper.exit_devices = set(exits)
        if points is not None:
            a.grouper.points = frozenset(points)
        a.grouper.udp_reads = udp_reads
        a.set_xdp_names(dict(xdp))
        pair.append(a)
    return pair[0], pair[1]


def _turn(a: Agent, step: Step, out: list[Any], read: Callable[[], None] | None = None) -> None:
    """One turn of Agent.run over a step: the stride thread's new level (if any), the read
    (`read`, else Agent.process of the step's events), follow_stride, the expiry tick."""
    now, events, expire, level = step
    if level is not None:
        a.set_stride_level(level)
    if read is None:
        a.process(events, out, now)
    else:
        read()
    a.follow_stride(out)
    if expire:
        a.grouper.expire(out, now)


def compare(feed: Feed, overrun_steps: frozenset[int] = frozenset(), **settings: Any) -> Outcome:
    """Run both paths over the feed; assert equal records after every step and equal
    counters at the end (after flush_all). overrun_steps: steps run with the agent's
    ring-buffer overrun flag set (every record incomplete)."""
    py, nat = _agents(**settings)
    ring_agent = _agents(**settings)[1]      # the native path reading a ring in place
    step_bytes = max(sum(len(e) + 16 for e in events) + 48 for _, events, _, _ in feed.steps)
    ring = MemRing(1 << max(12, (2 * step_bytes - 1).bit_length()))
    enc = LayerEventEncoder()
    done: list[tuple[str, bytes, int]] = []
    for i, step in enumerate(feed.steps):
        now, events = step[:2]
        outs: list[list[Any]] = [[], [], []]
        end = ring.batch(events)
        assert ring_span(*ring.addresses) == (ring.cons.value, end)
        for a, out in zip((py, nat, ring_agent), outs, strict=True):
            a.grouper.overrun = i in overrun_steps
            if a is ring_agent:
                def read(a: Agent = a, out: list[Any] = out, now: int = now,
                         end: int = end) -> None:
                    a._count(*a.grouper.process_ring(ring.addresses, out, now, end))
                _turn(a, step, out, read)
                assert ring.cons.value == end, f"step {i}: not given back"
            else:
                _turn(a, step, out)
        got_py = encoded(outs[0], enc)
        assert got_py == outs[1], f"step {i} (now {now}): records differ"
        assert outs[2] == outs[1], f"step {i} (now {now}): in place, records differ"
        assert py.grouper.open_groups == nat.grouper.open_groups, f"step {i}: open groups"
        done += got_py
    outs = [[], [], []]
    for a, out in zip((py, nat, ring_agent), outs, strict=True):
        a.grouper.flush_all(out)
    got_py = encoded(outs[0], enc)
    assert got_py == outs[1] == outs[2], "flush_all: records differ"
    done += got_py
    assert py.grouper.counters == nat.grouper.counters == ring_agent.grouper.counters
    assert py.grouper.gap_points == nat.grouper.gap_points == ring_agent.grouper.gap_points
    # hits, sampled_hits (batches: the ring path counts each step, empty ones too)
    assert (py.counters.hits, py.counters.sampled_hits) == (
        nat.counters.hits, nat.counters.sampled_hits) == (
        ring_agent.counters.hits, ring_agent.counters.sampled_hits)
    assert py.counters == nat.counters
    assert py.grouper.open_groups == nat.grouper.open_groups == 0
    return Outcome(done, nat.grouper.counters, nat.grouper.gap_points, nat)


def test_ring_reads_follow_the_kernel_protocol() -> None:
    """Copies (RingBuffer.read) and spans stop at a record being written, skip discarded
    ones, take records across the end whole, and give back exactly what they read."""
    ring = MemRing(256)
    recs = [bytes([i]) * (20 + 7 * i) for i in range(3)]
    for r in recs:
        ring.put(r)
    assert ring_read(*ring.addresses) == recs and ring.cons.value == ring.prod.value
    assert ring_pending(*ring.addresses[:2]) == 0
    end = ring.batch([b"a" * 40, b"b" * 52, b"c" * 16])   # wraps past 256
    assert ring.prod.value > 256 > ring.cons.value
    # unread: five 8-byte headers (three events, a discarded record among them, one being
    # written) and their bodies padded to 8 bytes
    assert ring_pending(*ring.addresses[:2]) == 5 * 8 + 40 + 56 + 16 + 24 + 8
    assert ring_span(*ring.addresses) == (ring.cons.value, end)
    assert ring_read(*ring.addresses) == [b"a" * 40, b"b" * 52, b"c" * 16]
    assert ring.cons.value == end                  # the BUSY record stays unread
    assert ring_read(*ring.addresses) == [] and ring.cons.value == end


def tx(seq: int, ts: int, *, length: int = 1, flow: Flow = V4, flags: int = 0,
       points: tuple[str, ...] = TX) -> list[bytes]:
    return [ev(p, seq, length, flow=flow, ts=ts + i, flags=flags) for i, p in enumerate(points)]


def rx(seq: int, ts: int, *, length: int = 1, flow: Flow = V4, flags: int = 0,
       points: tuple[str, ...] = RX, ifindex: int = 2) -> list[bytes]:
    return [ev(p, seq, length, flow=flow, ts=ts + i, flags=flags,
               ifindex=None if p.startswith("tcp_") else ifindex)
            for i, p in enumerate(points)]


# -- targeted streams --------------------------------------------------------------------------

def test_out_of_order_hits_and_sock_send_after_the_byte_left() -> None:
    f = Feed()
    evs = [*rx(0, 100), ev("sock_recv", 0, ts=150)]
    f.batch([evs[3], evs[0], evs[2], evs[1]]).batch([evs[4]])
    # a sender's byte: it leaves before sendmsg returns (waits for its sock_send)
    f.batch(list(reversed(tx(SIZE, 200)))).batch([ev("sock_send", SIZE, ts=190)])
    o = compare(f)
    assert o.counters.records == 2 and o.counters.gaps == 0


def test_socket_wait_causes_on_tcp_tx_and_sock_recv() -> None:
    """The tracked byte's hits carry their causes (sender on tcp_tx, receiver on sock_recv,
    both on one host too); a range's other bytes and other points carry none."""
    f = Feed()
    snd, rcv = (1, 2, 3, 4, 5, 6, 0, 0), (0, 0, 0, 0, 0, 0, 70, 8)
    f.batch([ev("sock_send", 0, 2 * SIZE, ts=1), ev("tcp_tx", 0, ts=50, wait=snd),
             ev("tcp_tx", SIZE, ts=50), *tx(0, 60, points=TX[2:]),
             *tx(SIZE, 60, points=TX[2:])])
    f.batch([*rx(0, 100), ev("sock_recv", 0, ts=200, wait=rcv)])
    f.batch([*rx(2 * SIZE, 100, points=RX), ev("sock_send", 2 * SIZE, ts=90),
             ev("tcp_tx", 2 * SIZE, ts=95, wait=snd), *tx(2 * SIZE, 96, points=TX[2:]),
             ev("sock_recv", 2 * SIZE, ts=300, wait=rcv)])
    o = compare(f)
    batch = codec.decode(LayerEventEncoder().batch([body for _fid, body, _first in o.records]))[1]
    waits = sorted((h["point"], tuple(h["wait"].values())) for r in batch["events"]
                   for h in r["hits"] if h["wait"])
    # the third byte's sock_recv joins its copy that reached TCP here (a record of its own
    # once the sender's closed at sock_send): its causes come in that record
    assert waits[0] == ("sock_recv", rcv) and waits[-2:] == [("tcp_tx", snd)] * 2, waits


@pytest.mark.parametrize("filter_retrans", [False, True])
def test_resends_marked_unmarked_and_the_retrans_point(filter_retrans: bool) -> None:
    f = Feed()
    marked = layout.FLAG_RESENT
    # marked resend: the original died in the qdisc
    f.batch([ev("sock_send", 0, ts=1), *tx(0, 10, points=TX[:4])])
    f.batch(tx(0, 100, flags=marked))
    # unmarked second copy passing the same points
    f.batch([ev("sock_send", SIZE, ts=1), *tx(SIZE, 10, points=TX[:4]), *tx(SIZE, 50)])
    # the retransmit tracepoint after a resend that left (the original closed long ago)
    f.batch([ev("sock_send", 2 * SIZE, ts=1), *tx(2 * SIZE, 2)])
    f.wait(300 * MS)
    f.batch(tx(2 * SIZE, 400 * MS)).batch([ev("retrans", 2 * SIZE, ts=400 * MS + 9)])
    # the retransmit tracepoint for a byte closed recently (remembered as resent)
    f.batch([ev("sock_send", 3 * SIZE, ts=1), *tx(3 * SIZE, 2)])
    f.batch([ev("retrans", 3 * SIZE, ts=3)])
    # overtaking copies in the receiver: the resend reaches TCP first
    f.batch([*rx(4 * SIZE, 10, points=RX[:2]), *rx(4 * SIZE, 20, flags=marked, points=RX[:2])])
    f.batch([*rx(4 * SIZE, 30, flags=marked, points=RX[2:]), *rx(4 * SIZE, 40, points=RX[2:]),
             ev("sock_recv", 4 * SIZE, ts=50)])
    # a duplicate after the read, unmarked
    f.batch([*rx(5 * SIZE, 10), ev("sock_recv", 5 * SIZE, ts=20)])
    f.batch(rx(5 * SIZE, 200, points=RX[:3]), dt_ns=200 * MS)
    f.wait(100 * MS).wait(2_000 * MS)
    o = compare(f, filter_retrans=filter_retrans)
    assert o.counters.retrans >= 5
    assert (o.counters.retrans_dropped > 0) == filter_retrans


def test_sequence_wrap_and_ranges_holding_several_samples() -> None:
    f = Feed()
    # 2^32 % SIZE != 0: the bytes before the wrap and the run from 0 are both sampled
    start = SPACE - 2500
    f.batch([*tx(start, 10, length=6000), ev("sock_send", start, 6000, ts=5)])
    f.batch([*rx(start, 100, length=6000), ev("sock_recv", start, 6000, ts=200)])
    # a range ending exactly at 2^32, one from 0, a long socket call
    f.batch(tx(SPACE - 3000, 300, length=3000) + tx(0, 310, length=2000))
    f.batch([ev("sock_send", SPACE - 3000, 64_000, ts=320)])
    f.wait(2_000 * MS)
    o = compare(f)
    assert o.agent.counters.sampled_hits > 10 * len(TX)


@pytest.mark.parametrize("size", [1, 7, 1448, 72400, 1 << 20])
def test_range_expansion_at_every_stride(size: int) -> None:
    """sampling.sampled_bytes and the C's expansion: the same bytes, wraps included."""
    rng = random.Random(size)
    most = 3000 if size < 100 else 200_000
    ranges = [(SPACE - 5, 20), (SPACE - 1, 1), (0, 1), (size - 1, 2), (size, 1), (5, 0)]
    ranges += [(rng.randrange(SPACE), rng.randrange(1, most)) for _ in range(30)]
    ranges += [(SPACE - rng.randrange(1, 5000), rng.randrange(1, most)) for _ in range(15)]
    f = Feed()
    for k, (seq, n) in enumerate(ranges):
        marks = [ev("retrans", seq, n, ts=k)] if k % 2 else []
        f.batch([ev("ip_out", seq, n, ts=k), *marks], expire=k % 5 == 0)
    o = compare(f, sample_size=size, filter_retrans=False)
    assert o.agent.counters.sampled_hits == sum(len(sampled_bytes(q, n, size)) for q, n in ranges)


def test_udp_ipv6_and_v4_mapped_flows() -> None:
    f = Feed()
    for flow in (V6, MAPPED, V4_JUNK, V4):
        f.batch([ev("sock_send", 0, 3000, flow=flow, ts=1), *tx(0, 5, length=3000, flow=flow)])
        f.batch([*rx(0, 50, length=3000, flow=flow), ev("sock_recv", 0, 3000, flow=flow, ts=90)])
    # UDP: seq is a hash, len ignored; equal datagrams are separate samples, never resent
    for flow in (UDP, UDP6):
        f.batch([ev("ip_out", 99, 1400, flow=flow, ts=1), ev("dev_xmit", 99, 1400, flow=flow, ts=2),
                 ev("dev_xmit", 99, 1400, flow=flow, ts=3), ev("ip_out", 7, flow=flow, ts=4)])
        f.batch([ev("dev_rx", 5, flow=flow, ts=5, ifindex=2), ev("ip_in", 5, flow=flow, ts=6)])
        f.batch([ev("ip_out", 8, flow=flow, ts=7, flags=layout.FLAG_RESENT)])
    f.wait(100 * MS)
    o = compare(f)
    fids = {fid for fid, _, _ in o.records}
    assert any(fid.startswith("udp:[fd00") for fid in fids) and any("::ffff:" in x for x in fids)


UDP_TX = ("sock_send", "ip_out", "ip_post", "dev_queue", "dev_xmit")
UDP_RX = ("dev_rx", "ip_pre", "ip_in")


def _run(a: Agent, feed: Feed) -> list[Any]:
    """One agent's records of a feed, flushed at its end."""
    out: list[Any] = []
    for step in feed.steps:
        _turn(a, step, out)
    a.grouper.flush_all(out)
    return out


def _py_records(feed: Feed, **settings: Any) -> list[Any]:
    """The reference (Python) path's records of a feed, as Record objects."""
    return _run(_agents(**settings)[0], feed)


def test_udp_socket_points_start_and_end_a_datagram() -> None:
    """A datagram sent here: sock_send (stamped at the call's entry, before ip_out) starts
    its record, which completes at dev_xmit on the exit device. Received here: the record
    waits for sock_recv (read 30 ms and, held past the linger, 400 ms later) and completes
    there, never flagged for TCP's points; one never read is flushed incomplete at hold;
    where sock_recv is not attached or its hook sees no UDP reads, ip_in completes it as
    before."""
    f = Feed()
    for flow in (UDP, UDP6):
        f.batch(tx(11, 1, flow=flow, points=UDP_TX))
        f.batch(rx(12, 10, flow=flow, points=UDP_RX))
        f.batch(rx(13, 11, flow=flow, points=UDP_RX))
        f.batch(rx(14, 12, flow=flow, points=UDP_RX))
        f.wait(30 * MS)
        f.batch([ev("sock_recv", 12, flow=flow, ts=30 * MS)])
        f.wait(60 * MS).wait(350 * MS)
        f.batch([ev("sock_recv", 13, flow=flow, ts=400 * MS)])
    f.wait(1_100 * MS).wait(2_000 * MS)
    o = compare(f, linger_ms=50, hold_ms=1000)
    assert o.counters.gaps == 0 and o.counters.records == 8
    recs = {(r.flow[1], r.seq): r for r in _py_records(f, linger_ms=50, hold_ms=1000)}
    for fam in (4, 6):
        sent, read, late, unread = (recs[fam, s] for s in (11, 12, 13, 14))
        assert [h.point for h in sent.hits] == list(UDP_TX) and sent.complete
        assert [h.point for h in read.hits] == [*UDP_RX, "sock_recv"] and read.complete
        assert [h.point for h in late.hits] == [*UDP_RX, "sock_recv"] and late.complete
        assert [h.point for h in unread.hits] == list(UDP_RX) and not unread.complete
    unattached = set(REV) - {"sock_recv"}
    for kw in ({"points": unattached}, {"udp_reads": False}):   # no UDP reads reported
        compare(f, linger_ms=50, hold_ms=1000, **kw)
        recs = {(r.flow[1], r.seq): r for r in _py_records(f, linger_ms=50, hold_ms=1000, **kw)}
        assert recs[4, 14].complete and recs[4, 14].hits[-1].point == "ip_in"


def test_a_copy_exactly_at_the_end_of_the_recent_window() -> None:
    """recent_ns (250 ms) is inclusive: a copy arriving exactly then is a resend; 1 ns
    later it is a new byte."""
    f = Feed()
    for k, late in ((0, 0), (1, 1)):
        f.batch([ev("sock_send", k * SIZE, ts=1), *tx(k * SIZE, 2)])
        f.batch(tx(k * SIZE, 3), dt_ns=250 * MS + late)
        f.wait(2_000 * MS)
    o = compare(f)
    assert o.counters.retrans == 1


def test_the_owed_memo_keeps_its_order() -> None:
    """A byte published without its read twice keeps its first place in the owed memo
    (an OrderedDict assignment), so an older entry behind it outlives owed_ns: its late
    read is still counted, not taken for a new byte."""
    f = Feed()
    f.batch(rx(0, 1)).wait(1_100 * MS)                 # owed at t1
    f.batch(rx(SIZE, 1)).wait(1_100 * MS)              # owed at t2
    f.wait(500 * MS).batch(rx(0, 1)).wait(1_100 * MS)  # the first again, owed at t3 (> t2)
    f.wait(60_000 * MS - 1_800 * MS)                   # past t2 + owed_ns, before t3's
    f.batch([ev("sock_recv", SIZE, ts=9), ev("sock_recv", 0, ts=9)])
    o = compare(f, hold_ms=1000)
    assert o.counters.late_socket == 2


def test_rate_cap_drops_whole_bytes() -> None:
    f = Feed()
    for k in range(60):
        f.batch([*tx(k * SIZE, k * 10, length=1), ev("sock_send", k * SIZE, ts=k * 10)],
                expire=k % 3 == 0, dt_ns=MS // 4)
        if k % 10 == 9:
            f.wait(60 * MS)
    o = compare(f, rate_cap_per_s=20)     # a bucket of 20, refilled at 20/s
    assert o.counters.rate_capped > 5 and o.counters.records > 5


def test_linger_hold_queued_and_owed_expiry() -> None:
    f = Feed()
    f.batch(rx(0, 10))                                           # held for its read
    f.batch([ev("sock_send", SIZE, ts=1)])                       # queued in the socket
    f.batch([ev("ip_out", 2 * SIZE, flow=UDP, ts=2)])           # UDP: linger only
    f.batch(tx(3 * SIZE, 5, points=TX[:4]))                      # in the qdisc: held
    f.wait(40 * MS).wait(20 * MS).wait(500 * MS)
    f.batch([ev("sock_recv", 0, ts=600 * MS)])                   # joins the held group
    f.wait(1_000 * MS)
    f.batch(tx(SIZE, 2_000 * MS))                                # the queued byte leaves
    f.batch(rx(4 * SIZE, 10)).wait(1_100 * MS)                   # held, then owed
    f.wait(3_000 * MS)
    f.batch([ev("sock_send", 5 * SIZE, ts=1)]).wait(61_000 * MS)  # queued past queued_ns
    o = compare(f, linger_ms=50, hold_ms=1000)
    assert o.counters.records >= 5


def test_a_coarser_stride_flushes_the_bytes_it_leaves() -> None:
    """Stride SIZE -> 2 SIZE (level 1) while four bytes wait in their socket (a sock_send
    hit only), one in the qdisc and a datagram for its read: the TCP bytes off the new
    stride (1, 3 and 5 SIZE) come out at the switch, incomplete and counted, where the
    queued ones waited for queued_ns; 0 and 2 SIZE complete when they leave; the datagram
    (hash 1, off the new modulus 2) is the kernel's to sample, and completes at its read."""
    f = Feed()
    f.batch([ev("sock_send", 0, 4 * SIZE, ts=1)])                # queued after a linger
    f.batch(tx(5 * SIZE, 5, points=TX[:4]))                      # in the qdisc: held
    f.batch([ev(p, 1, flow=UDP, ts=6 + i, ifindex=2) for i, p in enumerate(RX[:3])])
    f.wait(60 * MS)
    f.batch([], level=1)
    f.batch(tx(0, 100 * MS, length=4 * SIZE))                    # every byte leaves
    f.batch([ev("sock_recv", 1, flow=UDP, ts=101 * MS)])
    a, got = _agents(linger_ms=50, hold_ms=1000)[0], []
    for i, step in enumerate(f.steps):
        out: list[Any] = []
        _turn(a, step, out)
        got += [(i, r.seq, r.complete) for r in out]
    assert got == [(4, SIZE, False), (4, 3 * SIZE, False), (4, 5 * SIZE, False),
                   (5, 0, True), (5, 2 * SIZE, True), (6, 1, True)]
    assert a.grouper.counters.restrided == 3 and a.grouper.open_groups == 0
    assert compare(f, linger_ms=50, hold_ms=1000).counters.restrided == 3


def test_late_socket_hits_are_counted() -> None:
    f = Feed()
    f.batch(rx(0, 10)).wait(1_100 * MS).wait(3_000 * MS)
    f.batch([ev("sock_recv", 0, ts=4_000 * MS)])                 # after its record: late
    # a resent byte whose copies are all published: its read is late too
    f.batch([*rx(SIZE, 10), *rx(SIZE, 20, flags=layout.FLAG_RESENT)]).wait(1_100 * MS)
    f.wait(1_100 * MS)
    f.batch([ev("sock_recv", SIZE, ts=3_000 * MS)])
    o = compare(f, hold_ms=1000)
    assert o.counters.late_socket >= 2


def test_max_open_below_one_is_refused_by_the_settings() -> None:
    """0 would leave the Python path nothing to evict but the byte just opened (the C
    refuses it too): the settings say so before either path is built."""
    with pytest.raises(ValueError, match="max_open 0: at least 1"):
        AgentSettings(host="h1", max_open=0)


def test_max_open_evicts_the_oldest() -> None:
    f = Feed()
    for k in range(30):
        f.batch(rx(k * SIZE, k, points=RX[:2]), expire=False, dt_ns=1000)
    f.wait(2_000 * MS)
    o = compare(f, max_open=7)
    assert o.counters.evicted == 23


def test_gaps_exit_devices_points_and_xdp_names() -> None:
    f = Feed()
    f.batch([ev("ip_pre", 0, ifindex=2), ev("ip_in", 0), ev("sock_recv", 0, ts=2)])
    f.batch([ev("xdp", SIZE, ifindex=2, ts=1), ev("xdp", SIZE, ifindex=9, ts=2),
             *rx(SIZE, 3), ev("sock_recv", SIZE, ts=9)])
    f.batch([ev("dev_xmit", 2 * SIZE, ifindex=4, ts=1), ev("dev_xmit", 2 * SIZE, ts=2)])
    f.batch([ev("ip_post", 3 * SIZE, ts=1), ev("dev_xmit", 3 * SIZE, ts=2)])
    f.wait(2_000 * MS)
    kw = {"xdp_names": {(NS, 2): "eth-xdp"}, "exit_devices": {(NS, EXIT), (7, 1)}}
    o = compare(f, **kw)
    assert o.counters.gaps >= 2 and o.gap_points
    attached = set(REV) - {"dev_rx", "dev_queue"}
    compare(f, points=attached, **kw)


def test_a_byte_forwarded_through_many_devices() -> None:
    """A router's byte: 5 hits per device, 60 in one group (the C keeps 16 inline)."""
    f = Feed()
    per_dev = ("dev_rx", "ip_pre", "ip_post", "dev_queue", "dev_xmit")
    hops = [ev(p, 0, ts=10 * d + i, ifindex=10 + d, netns=NS + d % 3)
            for d in range(12) for i, p in enumerate(per_dev)]
    f.batch(hops[::-1]).batch([ev("dev_xmit", 0, ts=999)]).wait(2_000 * MS)
    o = compare(f)
    assert o.counters.records == 1 and o.records[0][1].count(b"veth2") >= 10


def test_many_open_groups_and_the_flow_cache_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of groups open at once (past the C's pools), and more raw flow keys than
    agent.FLOW_CACHE: the cache is emptied while groups of its flows are open, flows no
    group names are dropped, and the same tuple (from other raw bytes) is the same flow."""
    from latscope.producers import agent as agent_mod
    monkeypatch.setattr(agent_mod, "FLOW_CACHE", 50)
    f = Feed()
    for k in range(6000):
        junk = k.to_bytes(2, "little") * 6
        fl = Flow(V4.saddr[:4] + junk, V4.daddr, 40000 + k % 300, 5201, 4)
        f.batch([ev("dev_rx", k * SIZE, flow=fl, ifindex=2), ev("ip_pre", k * SIZE, flow=fl)],
                expire=False, dt_ns=1000)
    f.batch([ev("ip_in", k * SIZE, flow=Flow(V4.saddr, V4.daddr, 40000 + k % 300, 5201, 4))
             for k in range(0, 6000, 7)], expire=False)       # clean bytes, the same tuples
    f.wait(2_000 * MS)
    o = compare(f)
    assert o.counters.records == 6000 and o.agent.grouper.sizes()["raw_flows"] <= 51


def test_the_benchmark_stream() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from agent_replay import events
    recs = events(60_000_000, 72400)
    f = Feed()
    for i in range(0, len(recs), 256):
        f.batch(recs[i:i + 256])
    o = compare(f, sample_size=72400)
    assert o.counters.records == o.counters.samples > 800   # every sampled byte, whole


# -- a long randomized stream ------------------------------------------------------------------

def _random_feed(rng: random.Random) -> Feed:
    """Bytes of several flows sent and received by this host, with everything the rules
    handle mixed in: out-of-order delivery within a batch, drops in the qdisc, marked and
    unmarked resends, the retransmit tracepoint, reads after the hold, wraps, UDP, XDP."""
    f = Feed()
    strides = random.Random(rng.random())     # stride levels, apart from the events' draws
    seqs = {fl: rng.choice([0, SPACE - 20_000, rng.randrange(SPACE)]) for fl in TCP_FLOWS}
    pending: list[bytes] = []
    sent: list[tuple[Flow, int, int]] = []
    for _ in range(rng.randrange(150, 260)):
        r = rng.random()
        t = f.now - T0
        if r < 0.45:                                  # a range through this host
            fl = rng.choice(TCP_FLOWS)
            n = rng.choice([1, 900, 1448, 3000, 9000])
            seq = seqs[fl]
            seqs[fl] = (seq + n) % SPACE
            sent.append((fl, seq, n))
            way = rng.random()
            if way < 0.5:
                pts = TX if rng.random() < 0.85 else TX[:rng.randrange(1, 5)]   # a drop
                pending += tx(seq, t, length=n, flow=fl, points=pts)
                if rng.random() < 0.9:
                    pending.append(ev("sock_send", seq, n, flow=fl, ts=t + rng.randrange(9)))
            else:
                pts = RX if rng.random() < 0.85 else RX[:rng.randrange(1, 4)]
                if rng.random() < 0.2:
                    pending.append(ev("xdp", seq, n, flow=fl, ts=t, ifindex=2))
                pending += rx(seq, t, length=n, flow=fl, points=pts)
                if rng.random() < 0.8:
                    pending.append(ev("sock_recv", seq, n, flow=fl, ts=t + rng.randrange(20)))
        elif r < 0.6 and sent:                        # a resend of something sent before
            fl, seq, n = rng.choice(sent[-30:])
            flags = layout.FLAG_RESENT if rng.random() < 0.5 else 0
            if rng.random() < 0.5:
                pending += tx(seq, t, length=n, flow=fl, flags=flags)
            else:
                pending += rx(seq, t, length=n, flow=fl, flags=flags)
                if rng.random() < 0.5:
                    pending.append(ev("sock_recv", seq, n, flow=fl, ts=t + 3, flags=flags))
            if rng.random() < 0.4:
                pending.append(ev("retrans", seq, n, flow=fl, ts=t + 5))
        elif r < 0.68 and sent:                       # a late socket hit
            fl, seq, n = rng.choice(sent[-60:])
            pending.append(ev(rng.choice(["sock_send", "sock_recv"]), seq, n, flow=fl, ts=t))
        elif r < 0.76:                                # UDP datagrams (equal hashes repeat)
            fl = rng.choice([UDP, UDP6])
            h = rng.randrange(5)
            pending += [ev(p, h, flow=fl, ts=t + i, flags=layout.FLAG_RESENT
                           if rng.random() < 0.05 else 0)
                        for i, p in enumerate(rng.choice([
                            ("ip_out", "dev_xmit"), ("sock_send", "ip_out", "dev_xmit"),
                            ("dev_rx", "ip_pre", "ip_in"), ("ip_in", "sock_recv"),
                            ("dev_rx", "ip_pre", "ip_in", "sock_recv")]))]
            if rng.random() < 0.2:                    # a read after the linger
                pending.append(ev("sock_recv", h, flow=fl, ts=t + 100 * MS))
        if rng.random() < 0.35 or len(pending) > 60:  # the ring is read: shuffled a little
            for _ in range(len(pending) // 4):
                i = rng.randrange(len(pending))
                j = min(len(pending) - 1, i + rng.randrange(1, 4))
                pending[i], pending[j] = pending[j], pending[i]
            dt = rng.choice([MS // 10, MS, 5 * MS, 20 * MS, 60 * MS, 300 * MS, 1_200 * MS,
                             4_000 * MS])
            f.batch(pending, expire=rng.random() < 0.7, dt_ns=dt,
                    level=strides.randrange(3) if strides.random() < 0.1 else None)
            pending = []
    f.batch(pending)
    for dt in (100 * MS, 2_000 * MS, 61_000 * MS):
        f.wait(dt)
    return f


def _random_settings(rng: random.Random) -> dict[str, Any]:
    return {"filter_retrans": rng.random() < 0.5, "max_open": rng.choice([5, 40, 500_000]),
            "rate_cap_per_s": rng.choice([50, 2000, 10**9]), "linger_ms": rng.choice([20, 50]),
            "hold_ms": rng.choice([None, 300, 1000]),
            "points": None if rng.random() < 0.7 else set(rng.sample(sorted(REV), 9)),
            "udp_reads": rng.random() < 0.8,
            "xdp_names": {(NS, 2): "eth0"} if rng.random() < 0.5 else {}}


SEEDS = range(1, 41)


def test_randomized_streams() -> None:
    """Seeded streams, each with its own settings; summed, every counter the rules move
    was moved (else the streams no longer cover what they are for)."""
    total: dict[str, int] = {}
    for seed in SEEDS:
        rng = random.Random(seed)
        settings = _random_settings(rng)
        feed = _random_feed(rng)
        overrun = frozenset(i for i in range(len(feed.steps)) if rng.random() < 0.05)
        try:
            o = compare(feed, overrun, **settings)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, settings {settings}: {e}") from e
        for k, v in vars(o.counters).items():
            total[k] = total.get(k, 0) + v
    assert all(total.values()), total


def test_a_named_container_gets_records_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent covering its host and a container it names (AgentSettings.names): bytes sent
    from the container's socket through its veth, the host's bridge and out of the host
    come out as two records per byte, the container's (its namespace's hits, under its
    name, ending at its veth) and the host's (from the veth's host end out), both whole.
    Both paths, the same records (each member's in its own order: the native members take
    the batch in turn), a resend mark in the container reaching both."""
    from latscope.producers import agent as agent_mod
    ns_c = NS + 7
    monkeypatch.setattr(agent_mod, "inode_of", {"lsxh": NS, "lsxc": ns_c}.__getitem__)
    c_tx = [ev("sock_send", 0, ts=1, netns=ns_c),
            *(ev(p, 0, ts=10 + i, netns=ns_c, ifindex=None if p == "tcp_tx" else 5)
              for i, p in enumerate(TX))]
    h_fwd = [ev(p, 0, ts=20 + i, ifindex=i_f) for i, (p, i_f) in enumerate(
        (("dev_rx", 6), ("dev_queue", 8), ("dev_xmit", 8), ("dev_rx", 9), ("ip_pre", 9),
         ("ip_post", EXIT), ("dev_queue", EXIT), ("dev_xmit", EXIT)))]
    f = Feed()
    f.batch([*c_tx, *h_fwd])
    f.batch([*(ev(p, SIZE, ts=30, netns=ns_c, ifindex=None if p == "tcp_tx" else 5)
               for p in TX), ev("sock_send", SIZE, ts=31, netns=ns_c)])
    f.batch([ev("retrans", SIZE, ts=40, netns=ns_c)])
    f.batch([ev(p, SIZE, ts=50 + i, ifindex=i_f) for i, (p, i_f) in enumerate(
        (("dev_rx", 6), ("dev_queue", 8), ("dev_xmit", 8), ("dev_rx", 9), ("ip_pre", 9),
         ("ip_post", EXIT), ("dev_queue", EXIT), ("dev_xmit", EXIT)))])
    f.wait(2_000 * MS)
    enc = LayerEventEncoder()
    got: list[list[tuple[str, bytes, int]]] = []
    records: list = []
    for native in (False, True):
        a = Agent(AgentSettings(host="h1", netns=["lsxh", "lsxc"], names={"lsxc": "c9"},
                                sample_size=SIZE, rate_cap_per_s=10**9, filter_retrans=False,
                                native=native), clock=lambda: T0)
        a.grouper.members["h1"].exit_devices = {(NS, EXIT)}
        a.grouper.members["c9"].exit_devices = {(ns_c, 5)}
        out = _run(a, f)
        assert a.grouper.open_groups == 0
        if not native:
            records = out
            out = encoded(out, enc)
        got.append(sorted(out))
        assert a.grouper.counters.records == 4 and a.grouper.counters.gaps == 0
    assert got[0] == got[1]
    by = {(r.host, r.seq): r for r in records}
    assert sorted(by) == [("c9", 0), ("c9", SIZE), ("h1", 0), ("h1", SIZE)]
    for (host, seq), r in by.items():
        assert {h.netns for h in r.hits} == {ns_c if host == "c9" else NS}
        assert r.complete, (host, seq)
    assert [h.point for h in by[("c9", 0)].hits] == ["sock_send", *TX]
    assert by[("h1", 0)].hits[0].point == "dev_rx"
