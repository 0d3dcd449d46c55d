"""Grouping the hits of one sampled byte into records (pure logic, fake clock)."""

from __future__ import annotations

from latscope.producers.grouping import Grouper, Hit, Record
from latscope.schemas import codec

FLOW = ("tcp", 4, "10.1.0.1", "10.1.0.2", 40000, 5201)
RX = ("dev_rx", "ip_pre", "ip_in", "tcp_rx")          # a receiver's path below the socket
TX = ("tcp_tx", "ip_out", "ip_post", "dev_queue")     # a sender's, up to its exit's dev_xmit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def hit(point: str, ts: int, ifindex: int = 2, netns: int = 7) -> Hit:
    if point.startswith(("sock_", "tcp_")):
        ifindex = 0
    return Hit(point, ts, ifindex, "veth0" if ifindex else None, netns, 0)


def add(g: Grouper, out: list[Record], points: tuple[str, ...], t: int, *, ifindex: int = 2,
        resent: bool = False, seq: int = 0) -> None:
    for i, p in enumerate(points):
        g.add(FLOW, seq, hit(p, t + i, ifindex), out, resent=resent)


def send(g: Grouper, out: list[Record], t: int, *, resent: bool = False,
         exits: bool = True) -> None:
    """One transmission of byte 0 by this host's socket, out by exit device 3."""
    add(g, out, TX, t, ifindex=3, resent=resent)
    if exits:
        g.add(FLOW, 0, hit("dev_xmit", t + 9, ifindex=3), out, resent=resent)


def points(r: Record) -> list[str]:
    return [h.point for h in r.hits]


def test_last_point_flushes_complete_and_sorted() -> None:
    clk = Clock()
    g = Grouper("h2", clock=clk)
    out: list[Record] = []
    for p, t in (("ip_in", 30), ("dev_rx", 10), ("ip_pre", 20), ("tcp_rx", 40)):
        g.add(FLOW, 72400, hit(p, t), out)
    assert out == []
    g.add(FLOW, 72400, hit("sock_recv", 50), out)
    assert len(out) == 1 and out[0].as_dict()["complete"] and not out[0].as_dict()["retrans"]
    assert points(out[0]) == [*RX, "sock_recv"]
    assert out[0].as_dict()["flow_id"] == "tcp:10.1.0.1:40000>10.1.0.2:5201"
    name, rec = codec.decode(codec.encode("LayerEvent", out[0].as_dict()))
    assert name == "LayerEvent" and rec["seq"] == 72400


def test_exit_device_completes_linger_flushes_incomplete() -> None:
    clk = Clock()
    g = Grouper("h1", linger_ns=50_000_000, hold_ns=2_000_000_000, exit_devices={(7, 3)},
                clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("dev_xmit", 5, ifindex=2), out)     # not the exit device
    g.add(FLOW, 0, hit("dev_xmit", 9, ifindex=3), out)     # the exit device
    assert len(out) == 1 and out[0].as_dict()["complete"] and len(out[0].as_dict()["hits"]) == 2
    g.add(FLOW, 72400, hit("sock_send", 1), out)              # TCP, inside the host: held
    udp = ("udp", *FLOW[1:])
    g.add(udp, 99, hit("ip_out", 2), out)                     # UDP: linger only
    clk.now += 49_000_000
    g.expire(out)
    assert len(out) == 1
    clk.now += 2_000_000
    g.expire(out)
    assert len(out) == 2 and out[1].as_dict()["flow"]["proto"] == "udp" and not out[1].as_dict()["complete"]
    g.add(FLOW, 72400, hit("ip_out", 3), out)                 # a held group takes more hits
    assert g.open_groups == 1 and len(out) == 2
    clk.now += 2_100_000_000
    g.expire(out)
    assert len(out) == 3 and points(out[2]) == ["sock_send", "ip_out"]


def test_sender_waits_for_late_sock_send() -> None:
    """sock_send is reported when sendmsg returns, after the byte left: still one record."""
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    send(g, out, 5)
    assert out == []
    g.add(FLOW, 0, hit("sock_send", 1), out)
    assert len(out) == 1 and out[0].complete and not out[0].retrans
    assert points(out[0]) == ["sock_send", *TX, "dev_xmit"]


def test_marked_resend_flags_the_dead_original_and_every_copy() -> None:
    """The local qdisc dropped the first transmission; TCP sent the byte again, marked. The
    resend completes at the exit (flagged); the original, which never left, is flagged too
    once its sock_send is in (nothing else comes for it); filter_retrans drops both."""
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h1", filter_retrans=filt, exit_devices={(7, 3)}, clock=clk)
        out: list[Record] = []
        send(g, out, 10, exits=False)                         # dropped after dev_queue
        send(g, out, 200_000_000, resent=True)                # the marked resend left
        g.add(FLOW, 0, hit("sock_send", 1), out)              # sendmsg returns
        assert g.open_groups == 0 and g.counters.retrans == 1
        if filt:
            assert out == [] and g.counters.retrans_dropped == 2
        else:
            assert [(r.retrans, r.complete) for r in out] == [(True, True), (True, False)]
            assert points(out[0]) == [*TX, "dev_xmit"]          # no sock_send: a resend
            assert points(out[1]) == ["sock_send", *TX]


def test_original_that_left_stays_unflagged_like_downstream() -> None:
    """The original left whole (lost further down the path); a marked resend follows. The
    original's record is a true sample of that copy, as on the hosts it crossed: unflagged.
    The resend is flagged."""
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("sock_send", 1), out)
    send(g, out, 10)
    clk.now += 200_000_000
    send(g, out, 200_000_000, resent=True)
    assert [(r.retrans, r.complete) for r in out] == [(False, True), (True, True)]


def test_unmarked_resend_is_still_split_and_flagged() -> None:
    """Without the sender's mark (its host runs no agent), a byte passing a point it passed
    already is a second copy: both records are flagged (the original died here)."""
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h1", filter_retrans=filt, exit_devices={(7, 3)}, clock=clk)
        out: list[Record] = []
        g.add(FLOW, 0, hit("sock_send", 0), out)
        send(g, out, 10, exits=False)
        send(g, out, 100)                                     # the same points again
        assert g.counters.retrans == 1
        g.mark_retrans(FLOW, 0, out)                          # the tracepoint adds nothing
        clk.now += 2_000_000_000
        g.expire(out)
        assert g.open_groups == 0 and g.counters.retrans == 1
        if filt:
            assert out == [] and g.counters.retrans_dropped == 2
        else:
            assert sorted((r.retrans, r.complete) for r in out) == [(True, False), (True, True)]


def test_resend_that_left_completes_when_flagged() -> None:
    """Unmarked: a resend leaving the host completes once known as one: at its first hit
    when the original closed recently, else when tcp_retransmit_skb flags it (the resend
    never gets a sock_send to wait for)."""
    for remembered in (True, False):
        clk = Clock()
        g = Grouper("h1", exit_devices={(7, 3)}, clock=clk,
                    recent_ns=3_000_000_000 if remembered else 1)
        out: list[Record] = []
        g.add(FLOW, 0, hit("sock_send", 1), out)
        send(g, out, 2)
        assert [(r.retrans, r.complete) for r in out] == [(False, True)]
        clk.now += 200_000_000
        g.expire(out)
        send(g, out, 200_000_000)                             # resend, left
        assert len(out) == (2 if remembered else 1)
        g.mark_retrans(FLOW, 0, out)                          # no sock_send coming: a resend
        assert len(out) == 2 and out[1].retrans and out[1].complete
        assert g.counters.retrans == 1 and g.open_groups == 0


def test_rate_cap_drops_whole_bytes_and_counts() -> None:
    clk = Clock()
    g = Grouper("h1", rate_cap_per_s=2, clock=clk)
    out: list[Record] = []
    for seq in (0, 1, 2):
        g.add(FLOW, seq, hit("ip_out", 1), out)
    g.add(FLOW, 2, hit("ip_post", 2), out)              # later hit of a capped byte
    g.add(FLOW, 2, hit("ip_post", 3), out, resent=True)  # and of a resend of it
    g.flush_all(out)
    assert len(out) == 2 and g.counters.rate_capped == 1 and g.counters.samples == 2
    clk.now += 1_000_000_000                            # a second later: tokens again
    g.add(FLOW, 3, hit("ip_out", 1), out)
    assert g.counters.samples == 3


def _forward(g: Grouper, out: list[Record], t: int, resent: bool = False) -> None:
    """One copy of byte 0 passing the forwarder: in by ifindex 2, out by exit ifindex 3."""
    add(g, out, ("dev_rx", "ip_pre"), t, ifindex=2, resent=resent)
    add(g, out, ("ip_post", "dev_queue", "dev_xmit"), t + 2, ifindex=3, resent=resent)


def test_forwarder_flags_marked_copies_it_never_saw_the_original_of() -> None:
    """Downstream of the loss the forwarder only sees the resend: the sender's mark flags it
    (a forwarder has no retransmit tracepoint); filter_retrans drops it, counted."""
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h2", filter_retrans=filt, exit_devices={(7, 3)}, clock=clk)
        out: list[Record] = []
        _forward(g, out, 10, resent=True)
        assert g.counters.retrans == 1 and g.open_groups == 0
        if filt:
            assert out == [] and g.counters.retrans_dropped == 1
        else:
            assert [(r.retrans, r.complete) for r in out] == [(True, True)]


def test_forwarder_flags_a_second_unmarked_copy_of_a_closed_byte() -> None:
    """No mark: a second copy of the same (flow, seq) shortly after is a resend, flagged
    (and dropped with filter_retrans, counted) rather than a new unflagged record."""
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h2", filter_retrans=filt, exit_devices={(7, 3)}, clock=clk)
        out: list[Record] = []
        _forward(g, out, 10)
        assert len(out) == 1 and out[0].complete and not out[0].retrans
        clk.now += 200_000_000                       # an RTO later
        g.expire(out)
        _forward(g, out, 200_000_010)
        assert g.counters.retrans == 1
        if filt:
            assert len(out) == 1 and g.counters.retrans_dropped == 1
        else:
            assert len(out) == 2 and out[1].retrans and out[1].complete
        assert g.open_groups == 0


def test_forwarder_forgets_closed_bytes_after_recent_ns() -> None:
    """The memory is bounded in time (a sequence number repeats after 4 GiB) and size."""
    clk = Clock()
    g = Grouper("h2", exit_devices={(7, 3)}, recent_ns=1_000_000_000, clock=clk)
    out: list[Record] = []
    _forward(g, out, 10)
    clk.now += 1_100_000_000
    g.expire(out)
    _forward(g, out, 1_100_000_010)
    assert [r.retrans for r in out] == [False, False] and g.counters.retrans == 0
    small = Grouper("h2", exit_devices={(7, 3)}, max_recent=2, clock=clk)
    for seq in (0, 1, 2):
        small.add(FLOW, seq, hit("dev_xmit", 1, ifindex=3), out)
    small.add(FLOW, 0, hit("dev_xmit", 2, ifindex=3), out)   # forgotten: least recent
    small.add(FLOW, 2, hit("dev_xmit", 2, ifindex=3), out)   # remembered
    assert [r.retrans for r in out[-2:]] == [False, True]


def test_udp_is_never_flagged_as_resent() -> None:
    """UDP has no resends; equal datagrams (same hash) are distinct samples."""
    clk = Clock()
    g = Grouper("h2", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    udp = ("udp", *FLOW[1:])
    for t in (1, 2):
        g.add(udp, 99, hit("dev_xmit", t, ifindex=3), out)
    assert [r.retrans for r in out] == [False, False]


def test_overtaking_copies_are_never_mixed() -> None:
    """The records that lacked their last RX points: a resend (here a spurious tail loss
    probe) overtakes the original inside the receiving host. Before, the repeated dev_rx
    closed the original there, unflagged and without its last points, and its remaining hits
    went to the resend's record. With the sender's mark each copy keeps its own hits: the
    copy that reached TCP first gets the read; the other is flagged and incomplete."""
    for first in ("original", "resend"):
        clk = Clock()
        g = Grouper("h2", clock=clk)
        out: list[Record] = []
        add(g, out, ("dev_rx", "ip_pre"), 10)                    # the original comes in
        add(g, out, ("dev_rx", "ip_pre"), 20, resent=True)       # the resend overtakes
        late, early = (True, False) if first == "original" else (False, True)
        add(g, out, ("ip_in", "tcp_rx"), 30, resent=early)
        add(g, out, ("ip_in", "tcp_rx"), 40, resent=late)
        g.add(FLOW, 0, hit("sock_recv", 50), out)
        clk.now += 100_000_000
        g.expire(out)
        assert g.open_groups == 0 and g.counters.retrans == 1
        if first == "original":      # a spurious resend: the original is a whole sample
            assert [(r.retrans, r.complete) for r in out] == [(False, True), (True, False)]
        else:                        # the resend delivered the byte: both flagged
            assert sorted((r.retrans, r.complete) for r in out) == [(True, False), (True, True)]
        for r in out:
            assert points(r)[:4] == list(RX), points(r)       # each copy's own, in order
        read = next(r for r in out if r.complete)
        assert points(read)[-1] == "sock_recv" and read.retrans == (first == "resend")


def test_receiver_duplicate_after_read_is_flagged_not_held() -> None:
    """The app already read the byte: a later (unmarked) duplicate never gets a sock_recv;
    it is a flagged resend (dropped with filter_retrans), not an unflagged incomplete record."""
    clk = Clock()
    g = Grouper("h1", filter_retrans=True, clock=clk)
    out: list[Record] = []
    add(g, out, RX, 10)
    g.add(FLOW, 0, hit("sock_recv", 20), out)
    assert len(out) == 1 and out[0].complete and not out[0].retrans
    clk.now += 200_000_000
    add(g, out, RX[:3], 200_000_000)
    clk.now += 100_000_000                             # past linger, far below hold
    g.expire(out)
    assert len(out) == 1 and g.open_groups == 0
    assert g.counters.retrans == 1 and g.counters.retrans_dropped == 1


def test_one_agent_both_ends_waits_for_the_late_sock_send() -> None:
    """One agent covering both ends: the reader may read the byte before sendmsg returns.
    The record waits for its sock_send (one record, whole); that is no second copy."""
    clk = Clock()
    g = Grouper("h1", filter_retrans=True, clock=clk)
    out: list[Record] = []
    add(g, out, (*TX, "dev_xmit"), 0, ifindex=1)
    add(g, out, RX, 10, ifindex=1)
    g.add(FLOW, 0, hit("sock_recv", 19), out)
    assert out == []
    g.add(FLOW, 0, hit("sock_send", 20), out)
    assert g.counters.retrans == 0 and len(out) == 1 and out[0].complete
    assert points(out[0])[-1] == "sock_send" and len(out[0].hits) == 11


def test_late_socket_hit_after_hold_is_dropped_and_counted() -> None:
    """A byte waits up to hold for its read; published incomplete then. The read that comes
    later is dropped and counted, never published as a one-point record."""
    clk = Clock()
    g = Grouper("h2", hold_ns=1_000_000_000, clock=clk)
    out: list[Record] = []
    add(g, out, RX, 10)
    clk.now += 1_100_000_000
    g.expire(out)
    assert [(r.retrans, r.complete) for r in out] == [(False, False)]
    clk.now += 3_000_000_000
    g.expire(out)
    g.add(FLOW, 0, hit("sock_recv", 4_000_000_000), out)
    g.flush_all(out)
    assert len(out) == 1 and g.counters.late_socket == 1 and g.open_groups == 0


def test_a_record_lacking_a_point_on_its_way_is_incomplete_and_counted() -> None:
    """Every point for every byte: a record that reached its last point without a hit the
    path implies (here dev_rx before ip_pre, and tcp_rx before the read) is not passed as
    whole. Points that are not attached are not required."""
    clk = Clock()
    g = Grouper("h2", clock=clk)
    out: list[Record] = []
    for p in ("ip_pre", "ip_in", "sock_recv"):
        g.add(FLOW, 0, hit(p, 1), out)
    assert len(out) == 1 and not out[0].complete
    assert g.counters.gaps == 1 and g.gap_points == {"dev_rx": 1, "tcp_rx": 1}
    partial = Grouper("h2", clock=clk, points=frozenset({"ip_pre", "ip_in", "sock_recv"}))
    for p in ("ip_pre", "ip_in", "sock_recv"):
        partial.add(FLOW, 0, hit(p, 1), out)
    assert out[1].complete and partial.counters.gaps == 0


def test_a_byte_the_app_handed_over_waits_for_its_transmission() -> None:
    """A full window keeps a byte in the sender's socket buffer past the hold: no other host
    has seen it, so its record waits for the transmission (up to queued_ns) instead of
    being published as a sock_send half now and the rest later."""
    clk = Clock()
    g = Grouper("h1", hold_ns=1_000_000_000, exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("sock_send", 1), out)
    clk.now += 5_000_000_000
    g.expire(out)
    assert out == [] and g.open_groups == 1
    send(g, out, 5_000_000_000)
    assert [(r.retrans, r.complete) for r in out] == [(False, True)]
    assert points(out[0]) == ["sock_send", *TX, "dev_xmit"]
    g.add(FLOW, 1, hit("sock_send", 1), out)
    clk.now += 61_000_000_000
    g.expire(out)
    assert len(out) == 2 and not out[1].complete and g.open_groups == 0


def test_a_resent_copy_waiting_in_the_receive_queue_gets_its_read() -> None:
    """The CI failure: a byte whose copy reached the receiver's TCP out of order (a hole
    before it, filled by a resend) waits in the out-of-order queue longer than a linger
    before the app reads it. When that byte is itself resent (here: a marked copy), its copy
    is held for the read like an only copy; the read joins it. Before, the idle copy was
    published without its read and the read became an unflagged one-point record: a byte in
    halves, with nothing unflagged on the sender."""
    for marked in (True, False):
        clk = Clock()
        g = Grouper("h2", clock=clk)
        out: list[Record] = []
        if not marked:     # an unmarked second copy: the first died in this host
            add(g, out, ("dev_rx", "ip_pre"), 1)
        add(g, out, RX, 10, resent=marked)
        clk.now += 80_000_000                              # past linger, far below hold
        g.expire(out)
        g.add(FLOW, 0, hit("sock_recv", 80_000_000), out)
        clk.now += 100_000_000
        g.expire(out)
        read = [r for r in out if "sock_recv" in points(r)]
        assert len(read) == 1 and points(read[0]) == [*RX, "sock_recv"], [points(r) for r in out]
        assert read[0].complete and read[0].retrans and g.counters.late_socket == 0
        assert all(r.retrans for r in out) and g.counters.gaps == 0


def test_a_resend_in_a_qdisc_waits_for_its_dev_xmit() -> None:
    """A resent copy queued in the sender's qdisc (dev_queue, no dev_xmit yet) may leave
    later than a linger after its last hit, as measured under load (the agent read a resend's
    dev_xmit after its copy had been published: a dev_xmit-only record). It is held like the
    original."""
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    send(g, out, 10, exits=False)                         # the original dies in the qdisc
    send(g, out, 100, resent=True, exits=False)           # the resend waits in it
    clk.now += 80_000_000                                 # past linger, far below hold
    g.expire(out)
    g.add(FLOW, 0, hit("sock_send", 5), out)
    g.add(FLOW, 0, hit("dev_xmit", 80_000_000, ifindex=3), out, resent=True)
    clk.now += 2_000_000_000
    g.expire(out)
    assert sorted(points(r) for r in out) == [["sock_send", *TX], [*TX, "dev_xmit"]]
    assert all(r.retrans for r in out) and g.open_groups == 0
    resend = next(r for r in out if "dev_xmit" in points(r))
    assert resend.complete
