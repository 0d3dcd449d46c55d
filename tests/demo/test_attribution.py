"""Attribution: delay injected at a known place lands in that place's segment (>= 90 %)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.stack]


def share(flow: dict, frm: str, to: str) -> float:
    """The segment's share of the flow's mean end-to-end delay."""
    seg = next(s for s in flow["segments"] if s["from"] == frm and s["to"] == to)
    return seg["mean_us"] / flow["end_to_end_us"]["mean"]


@pytest.fixture(scope="module")
def run(stack, demo_runner) -> dict:
    # TCP autocorking holds a write back while the socket's previous skb still sits in the
    # qdisc: with it on, ~25 % of the paced flow's wait shows up (truthfully) in h1's
    # socket, corked behind its own queued segment. Off, the wait is all the qdisc's.
    return demo_runner(Path(__file__).with_name("attribution.yaml"), duration=12,
                       sysctls={"h1": {"net.ipv4.tcp_autocorking": "0"}})


def test_slow_reader_wait_lands_in_receiver_socket(run) -> None:
    assert not run.get("missing"), run.get("missing")
    slow = next(f for f in run["flows"] if f["name"] == "slow")
    assert slow["samples"] >= 20
    assert share(slow, "h1:tcp_rx", "h1:sock_recv") >= 0.9, slow


def test_shared_bottleneck_wait_lands_in_the_qdisc(run) -> None:
    paced = next(f for f in run["flows"] if f["name"] == "paced")
    assert paced["samples"] >= 20
    qdisc = [s for s in paced["segments"] if s["layer"] == "qdisc" and s["hosts"] == ["h1"]]
    assert len(qdisc) == 1, qdisc
    assert share(paced, qdisc[0]["from"], qdisc[0]["to"]) >= 0.9, paced


def test_bulk_flow_waits_in_its_own_send_buffer(run) -> None:
    """The truth the breakdown must tell: a bulk sender's bytes queue in its socket."""
    bulk = next(f for f in run["flows"] if f["name"] == "bulk")
    top = max(bulk["segments"], key=lambda s: s["mean_us"] * s["count"])
    assert (top["from"], top["layer"]) == ("h1:sock_send", "socket"), top
