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
    clk = Clock()
    g = Grouper("h1", exit_devices={(7, 3)}, clock=clk)
    out: list[Record] = []
    g.add(FLOW, 0, hit("sock_send", 1, ifindex=0), out)
    g.add(FLOW, 0, hit("ip_out", 2), out)
    g.add(FLOW, 0, hit("dev_xmit", 3, ifindex=3), out)
    g.add(FLOW, 0, hit("ip_out", 50), out)                    # resend
    g.add(FLOW, 0, hit("dev_xmit", 51, ifindex=3), out)       # left: waits for sock_send?
    assert len(out) == 1
    g.mark_retrans(FLOW, 0, out)                              # no: it is a resend
    assert len(out) == 2 and out[1].as_dict()["retrans"] and out[1].as_dict()["complete"]


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
