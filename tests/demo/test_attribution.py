"""Attribution: delay injected at a known place lands in that place's segment (>= 90 %)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from truth import load

pytestmark = [pytest.mark.root, pytest.mark.stack]


def table(flow: dict) -> str:
    return "\n".join(f"{s['from']}→{s['to']} {s['layer']} n={s['count']} mean={s['mean_us']}"
                     for s in flow["segments"]) + f"\ne2e {flow['end_to_end_us']}"


def share(flow: dict, frm: str, to: str) -> float:
    """The segment's share of the flow's mean end-to-end delay."""
    seg = next(s for s in flow["segments"] if s["from"] == frm and s["to"] == to)
    return seg["mean_us"] / flow["end_to_end_us"]["mean"]


def median_share(stack, run: dict, flow: str, frm: str, to: str) -> float:
    """Median over the flow's complete samples of segment / end-to-end: robust to the
    scheduler outliers a shared 2-core machine adds to every other segment."""
    bds, _ = load(stack.kafka_bootstrap, run)
    shares = []
    for bd in bds:
        if not bd["complete"] or bd["end_to_end_ns"] <= 0:
            continue
        seg = next((s for s in bd["segments"] if s["from"] == frm and s["to"] == to), None)
        if seg is not None and bd["src_host"] == flow[0] and bd["flow"]["dport"] == flow[1]:
            shares.append(seg["duration_ns"] / bd["end_to_end_ns"])
    assert len(shares) >= 20, len(shares)
    return statistics.median(shares)


@pytest.fixture(scope="module")
def run(stack, demo_runner) -> dict:
    # TCP autocorking holds a write back while the socket's previous skb still sits in the
    # qdisc: with it on, ~25 % of the paced flow's wait shows up (truthfully) in h1's
    # socket, corked behind its own queued segment. Off, the wait is all the qdisc's.
    # The same on h2, the slow flow's sender: with the suite's load on the two cores its
    # previous segment sometimes still sat in the device, and once 14 % of the slow flow's
    # delay was h2's socket (a CI run; 6 runs of this module alone passed).
    off = {"net.ipv4.tcp_autocorking": "0"}
    return demo_runner(Path(__file__).with_name("attribution.yaml"), duration=12,
                       sysctls={"h1": off, "h2": off})


def test_slow_reader_wait_lands_in_receiver_socket(stack, run) -> None:
    assert not run.get("missing"), run.get("missing")
    slow = next(f for f in run["flows"] if f["name"] == "slow")
    assert slow["samples"] >= 20
    assert median_share(stack, run, ("h2", 5303), "h1:tcp_rx", "h1:sock_recv") >= 0.9, \
        table(slow)
    assert share(slow, "h1:tcp_rx", "h1:sock_recv") >= 0.8, table(slow)   # of the mean too


def test_shared_bottleneck_wait_lands_in_the_qdisc(stack, run) -> None:
    paced = next(f for f in run["flows"] if f["name"] == "paced")
    assert paced["samples"] >= 20
    qdisc = [s for s in paced["segments"] if s["layer"] == "qdisc" and s["hosts"] == ["h1"]]
    assert len(qdisc) == 1, qdisc
    frm, to = qdisc[0]["from"], qdisc[0]["to"]
    assert median_share(stack, run, ("h1", 5302), frm, to) >= 0.9, table(paced)
    assert share(paced, frm, to) >= 0.75, table(paced)   # of the mean too


def test_bulk_flow_waits_in_its_own_send_buffer(run) -> None:
    """The truth the breakdown must tell: a bulk sender's bytes queue in its socket."""
    bulk = next(f for f in run["flows"] if f["name"] == "bulk")
    top = max(bulk["segments"], key=lambda s: s["mean_us"] * s["count"])
    assert (top["from"], top["layer"]) == ("h1:sock_send", "socket"), top
