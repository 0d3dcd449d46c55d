"""Grouping the hits of one sampled byte into one record (pure logic, fake clock)."""

from __future__ import annotations

from latscope.producers.grouping import Grouper, Hit, Record
from latscope.schemas import codec

FLOW = ("tcp", 4, "10.1.0.1", "10.1.0.2", 40000, 5201)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def hit(point: str, ts: int, ifindex: int = 2, netns: int = 7) -> Hit:
    return Hit(point, ts, ifindex, "veth0" if ifindex else None, netns, 0)


def test_last_point_flushes_complete_and_sorted() -> None:
    clk = Clock()
    g = Grouper("h2", clock=clk)
    out: list[Record] = []
    g.add(FLOW, 72400, hit("ip_in", 30), out)
    g.add(FLOW, 72400, hit("dev_rx", 10), out)
    assert out == []
    g.add(FLOW, 72400, hit("sock_recv", 50, ifindex=0), out)
    assert len(out) == 1 and out[0].as_dict()["complete"] and not out[0].as_dict()["retrans"]
    assert [h["point"] for h in out[0].as_dict()["hits"]] == ["dev_rx", "ip_in", "sock_recv"]
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
    g.add(FLOW, 72400, hit("sock_send", 1, ifindex=0), out)   # TCP, inside the host: held
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
    assert len(out) == 3 and [h["point"] for h in out[2].as_dict()["hits"]] == ["sock_send", "ip_out"]


def test_retransmission_splits_and_is_flagged_or_dropped() -> None:
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h1", filter_retrans=filt, clock=clk)
        out: list[Record] = []
        g.add(FLOW, 0, hit("sock_send", 0, ifindex=0), out)
        g.add(FLOW, 0, hit("ip_out", 1), out)
        g.add(FLOW, 0, hit("dev_xmit", 2), out)
        g.add(FLOW, 0, hit("ip_out", 100), out)        # the same byte again: a resend
        assert len(out) == 1 and not out[0].as_dict()["retrans"]
        assert g.counters.retrans == 1                 # known already, counted once
        g.add(FLOW, 0, hit("dev_xmit", 101), out)
        g.mark_retrans(FLOW, 0, out)
        g.flush_all(out)
        if filt:
            assert len(out) == 1 and g.counters.retrans_dropped == 1
        else:
            assert len(out) == 2 and out[1].as_dict()["retrans"] and len(out[1].as_dict()["hits"]) == 2
        assert g.counters.retrans == 1


def test_rate_cap_drops_whole_bytes_and_counts() -> None:
    clk = Clock()
    g = Grouper("h1", rate_cap_per_s=2, clock=clk)
    out: list[Record] = []
    for seq in (0, 1, 2):
        g.add(FLOW, seq, hit("ip_out", 1), out)
    g.add(FLOW, 2, hit("dev_xmit", 2), out)             # later hit of a capped byte
    g.flush_all(out)
    assert len(out) == 2 and g.counters.rate_capped == 1 and g.counters.samples == 2
    clk.now += 1_000_000_000                            # a second later: tokens again
    g.add(FLOW, 3, hit("ip_out", 1), out)
    assert g.counters.samples == 3


def test_sender_waits_for_late_sock_send() -> None:
    """sock_send is reported when sendmsg returns, after the byte left: still one record."""
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("ip_out", 5), out)
    g.add(FLOW, 0, hit("dev_xmit", 9, ifindex=3), out)
    assert out == []
    g.add(FLOW, 0, hit("sock_send", 1, ifindex=0), out)
    assert len(out) == 1 and out[0].as_dict()["complete"]
    assert [h["point"] for h in out[0].as_dict()["hits"]] == ["sock_send", "ip_out", "dev_xmit"]


def test_resend_that_left_completes_when_flagged() -> None:
    """A resend leaving the host completes once known as one: at its first hit when the
    original closed recently, else when tcp_retransmit_skb flags it (the resend never gets
    a sock_send to wait for)."""
    for remembered in (True, False):
        clk = Clock()
        g = Grouper("h1", exit_devices={(7, 3)}, clock=clk,
                    recent_ns=3_000_000_000 if remembered else 1)
        out: list[Record] = []
        g.add(FLOW, 0, hit("sock_send", 1, ifindex=0), out)
        g.add(FLOW, 0, hit("ip_out", 2), out)
        g.add(FLOW, 0, hit("dev_xmit", 3, ifindex=3), out)
        clk.now += 200_000_000
        g.add(FLOW, 0, hit("ip_out", 50), out)                    # resend
        g.add(FLOW, 0, hit("dev_xmit", 51, ifindex=3), out)       # left: waits for sock_send?
        assert len(out) == (2 if remembered else 1)
        g.mark_retrans(FLOW, 0, out)                              # no: it is a resend
        assert len(out) == 2 and out[1].as_dict()["retrans"] and out[1].as_dict()["complete"]
        assert g.counters.retrans == 1 and g.open_groups == 0


def test_late_sock_send_goes_to_the_original_not_the_resend() -> None:
    """The resend happens while sendmsg still runs: its sock_send hit belongs to the first
    transmission, which is kept (not flushed) until it arrives."""
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("ip_out", 2), out)
    g.add(FLOW, 0, hit("dev_queue", 3), out)                  # dropped by the qdisc
    g.add(FLOW, 0, hit("ip_out", 50), out)                    # resend
    g.add(FLOW, 0, hit("dev_xmit", 51, ifindex=3), out)       # the resend left
    g.mark_retrans(FLOW, 0, out)
    assert [r.retrans for r in out] == [True]
    g.add(FLOW, 0, hit("sock_send", 1, ifindex=0), out)       # sendmsg returns
    assert len(out) == 2 and not out[1].retrans and not out[1].complete
    assert [h.point for h in out[1].hits] == ["sock_send", "ip_out", "dev_queue"]
    assert g.open_groups == 0


def _forward(g: Grouper, out: list[Record], t: int) -> None:
    """One copy of byte 0 passing the forwarder: in by ifindex 2, out by exit ifindex 3."""
    for i, p in enumerate(("dev_rx", "ip_pre", "ip_post")):
        g.add(FLOW, 0, hit(p, t + i, ifindex=2), out)
    g.add(FLOW, 0, hit("dev_xmit", t + 3, ifindex=3), out)


def test_forwarder_flags_a_second_copy_of_a_closed_byte() -> None:
    """A forwarder closes a byte at its exit device and has no retransmit tracepoint: a
    second copy of the same (flow, seq) shortly after is a resend, flagged (and dropped with
    filter_retrans, counted) rather than a new unflagged record."""
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


def _receive(g: Grouper, out: list[Record], t: int, tcp_rx: bool = True) -> None:
    for i, p in enumerate(("dev_rx", "ip_pre", "ip_in", "tcp_rx")[:4 if tcp_rx else 3]):
        g.add(FLOW, 0, hit(p, t + i), out)


def test_receiver_duplicate_before_read_keeps_sock_recv_on_the_first_copy() -> None:
    """Both copies arrive before the app reads the byte: the read (sock_recv) belongs to the
    first copy's record, which completes; the duplicate is flagged (dropped when filtered)."""
    for filt in (False, True):
        clk = Clock()
        g = Grouper("h1", filter_retrans=filt, clock=clk)
        out: list[Record] = []
        _receive(g, out, 10)
        clk.now += 1_000_000
        _receive(g, out, 1_000_010, tcp_rx=False)     # the duplicate (TCP discards it)
        assert out == []
        g.add(FLOW, 0, hit("sock_recv", 5_000_000, ifindex=0), out)
        assert len(out) == 1 and out[0].complete and not out[0].retrans
        assert [h.ts_ns for h in out[0].hits] == [10, 11, 12, 13, 5_000_000]
        clk.now += 100_000_000
        g.expire(out)
        assert g.open_groups == 0 and g.counters.retrans == 1
        if filt:
            assert len(out) == 1 and g.counters.retrans_dropped == 1
        else:
            assert len(out) == 2 and out[1].retrans and not out[1].complete
            assert [h.point for h in out[1].hits] == ["dev_rx", "ip_pre", "ip_in"]


def test_receiver_duplicate_after_read_is_flagged_not_held() -> None:
    """The app already read the byte: a later duplicate never gets a sock_recv; it is a
    flagged resend (dropped with filter_retrans), not an unflagged incomplete record."""
    clk = Clock()
    g = Grouper("h1", filter_retrans=True, clock=clk)
    out: list[Record] = []
    _receive(g, out, 10)
    g.add(FLOW, 0, hit("sock_recv", 20, ifindex=0), out)
    assert len(out) == 1 and out[0].complete
    clk.now += 200_000_000
    _receive(g, out, 200_000_000, tcp_rx=False)
    clk.now += 100_000_000                             # past linger, far below hold
    g.expire(out)
    assert len(out) == 1 and g.open_groups == 0
    assert g.counters.retrans == 1 and g.counters.retrans_dropped == 1


def test_late_socket_point_after_close_is_not_a_resend() -> None:
    """One agent covering both ends: the reader may read the byte before sendmsg returns.
    The late sock_send is no second copy of the byte, so it is not flagged or dropped."""
    clk = Clock()
    g = Grouper("h1", filter_retrans=True, clock=clk)
    out: list[Record] = []
    for i, p in enumerate(("ip_out", "dev_xmit", "dev_rx", "ip_in")):
        g.add(FLOW, 0, hit(p, i), out)
    g.add(FLOW, 0, hit("sock_recv", 9, ifindex=0), out)
    g.add(FLOW, 0, hit("sock_send", 10, ifindex=0), out)
    g.flush_all(out)
    assert g.counters.retrans == 0 and g.counters.retrans_dropped == 0 and len(out) == 2
