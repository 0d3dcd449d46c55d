"""Attribution: delay injected at a known place lands in that place's segment (>= 90 %),
with the value a figure LatScope does not compute predicts.

* slow reader: h1's receiver sleeps 61 ms after each read and drains its socket every time
  (a read period's bytes are far below its read size), so a byte waits in h1's receive
  socket from its arrival to the next read: uniform over the read period, median half of
  it. The period comes from the receiving application's own clock (its report: time from
  first to last read over the reads), not from LatScope.
* shared bottleneck: the paced flow's packets join h1's tbf behind a steady backlog of the
  bulk flow's frames; a FIFO draining at rate r makes a packet wait backlog / r. Backlog and
  r (bytes sent over time) are read from ``tc -s qdisc show`` while the flows run: r is the
  tbf's configured rate unless the machine is too busy to keep it.
* wire: h1 and h2 are joined by a veth, which hands a frame over in microseconds: the
  corrected wire segment of every flow, both directions, is within a few µs of 0, and no
  sample is negative by more than its sync bound.
Tolerances are stated at each constant with the spread measured on this machine.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

from latscope.lab.topology import load_topology

sys.path.insert(0, str(Path(__file__).parent))
from truth import QdiscSamples, load

pytestmark = [pytest.mark.root, pytest.mark.stack]
TOPOLOGY = Path(__file__).with_name("attribution.yaml")
# h2's receive buffer, clamped: the bulk flow (h1 -> h2) is window-limited at ~15 kB in
# flight, which then sits in h1's tbf as a steady backlog (attribution.yaml).
RMEM = "4096 32768 32768"
# Median slow-reader wait vs half the read period. Measured: ratios 0.96-1.03 over 13 runs
# (a 2-core machine shared with other suites); 10 % holds that with room for a heavier load.
SLOW_TOL = 0.10
# Median paced qdisc wait vs mean backlog / drain rate. Measured: ratios 0.96-1.05 over 8 runs;
# 12 % holds that under more load and still fails a scale error (or what the same
# figure was off by (23-30 %) with a 32 kB burst, whose GSO packets tc counts whole:
# attribution.yaml).
QDISC_TOL = 0.12
# Wire over a veth: median within this many µs of 0 (measured medians 2.0-4.7 µs over 5
# runs, 10.5 µs with the old 32 kB burst's 64 kB GSO packets), no sample below minus its
# bound (measured: the lowest sample was 3 µs above it), and every sample's pair bound at
# most WIRE_BOUND_MAX (measured 1.7-9.3 µs), so "never negative beyond its bound" says
# something.
WIRE_MEDIAN_MAX_NS = 15_000
WIRE_BOUND_MAX_NS = 20_000


def table(flow: dict) -> str:
    return "\n".join(f"{s['from']}→{s['to']} {s['layer']} n={s['count']} mean={s['mean_us']}"
                     for s in flow["segments"]) + f"\ne2e {flow['end_to_end_us']}"


def share(flow: dict, frm: str, to: str) -> float:
    """The segment's share of the flow's mean end-to-end delay."""
    seg = next(s for s in flow["segments"] if s["from"] == frm and s["to"] == to)
    return seg["mean_us"] / flow["end_to_end_us"]["mean"]


def samples(bds: list[dict], flow: tuple[str, int]) -> list[dict]:
    """Complete breakdowns of the flow (src host, dport), resends left out."""
    return [bd for bd in bds if bd["complete"] and not bd["retrans"]
            and bd["src_host"] == flow[0] and bd["flow"]["dport"] == flow[1]]


def segment(bd: dict, frm: str, to: str) -> dict | None:
    return next((s for s in bd["segments"] if s["from"] == frm and s["to"] == to), None)


def median_share(bds: list[dict], flow: tuple[str, int], frm: str, to: str) -> float:
    """Median over the flow's complete samples of segment / end-to-end: robust to the
    scheduler outliers a shared 2-core machine adds to every other segment."""
    shares = []
    for bd in bds:
        if not bd["complete"] or bd["end_to_end_ns"] <= 0:
            continue
        seg = segment(bd, frm, to)
        if seg is not None and bd["src_host"] == flow[0] and bd["flow"]["dport"] == flow[1]:
            shares.append(seg["duration_ns"] / bd["end_to_end_ns"])
    assert len(shares) >= 20, len(shares)
    return statistics.median(shares)


@pytest.fixture(scope="module")
def qdisc() -> QdiscSamples:
    return QdiscSamples("h1", "h2")


@pytest.fixture(scope="module")
def run(stack, demo_runner, qdisc: QdiscSamples) -> dict:
    # TCP autocorking holds a write back while the socket's previous skb still sits in the
    # qdisc: with it on, ~25 % of the paced flow's wait shows up (truthfully) in h1's
    # socket, corked behind its own queued segment. Off, the wait is all the qdisc's.
    # The same on h2, the slow flow's sender: with the suite's load on the two cores its
    # previous segment sometimes still sat in the device, and once 14 % of the slow flow's
    # delay was h2's socket (a CI run; 6 runs of this module alone passed).
    off = {"net.ipv4.tcp_autocorking": "0"}
    return demo_runner(TOPOLOGY, duration=12,
                       sysctls={"h1": off, "h2": {**off, "net.ipv4.tcp_rmem": RMEM}},
                       monitor=qdisc.monitor)


@pytest.fixture(scope="module")
def bds(stack, run) -> list[dict]:
    """Every breakdown the run published, as a plain consumer reads them."""
    return load(stack.kafka_bootstrap, run)[0]


def test_slow_reader_wait_lands_in_receiver_socket(run, bds) -> None:
    assert not run.get("missing"), run.get("missing")
    slow = next(f for f in run["flows"] if f["name"] == "slow")
    assert slow["samples"] >= 20
    assert median_share(bds, ("h2", 5303), "h1:tcp_rx", "h1:sock_recv") >= 0.9, table(slow)
    assert share(slow, "h1:tcp_rx", "h1:sock_recv") >= 0.8, table(slow)   # of the mean too


def test_slow_reader_wait_is_half_the_read_period(run, bds) -> None:
    flow = load_topology(TOPOLOGY).flow("slow")
    rx = next(t for t in run["traffic"] if t["flow"] == "slow")["receiver"]
    period_s = rx["elapsed_s"] / (rx["reads"] - 1)       # the reader's own clock
    # The model's conditions: every read drains the socket (a period's bytes, ~9 kB, far
    # below the read size), and the period is the sleep plus a little of the reader's time.
    assert rx["bytes"] / rx["reads"] < flow.read_size / 4, rx
    assert flow.reader_delay_ms / 1e3 <= period_s <= 1.15 * flow.reader_delay_ms / 1e3, rx
    waits = [segment(bd, "h1:tcp_rx", "h1:sock_recv") for bd in samples(bds, ("h2", 5303))]
    waits = [s["duration_ns"] for s in waits if s is not None]
    assert len(waits) >= 50, len(waits)
    got, want = statistics.median(waits), period_s / 2 * 1e9
    assert abs(got / want - 1) <= SLOW_TOL, (
        f"median socket wait {got / 1e6:.2f} ms, half the read period {want / 1e6:.2f} ms "
        f"(reader delay {flow.reader_delay_ms} ms, {rx['reads']} reads)")


def test_shared_bottleneck_wait_lands_in_the_qdisc(run, bds) -> None:
    paced = next(f for f in run["flows"] if f["name"] == "paced")
    assert paced["samples"] >= 20
    qd = [s for s in paced["segments"] if s["layer"] == "qdisc" and s["hosts"] == ["h1"]]
    assert len(qd) == 1, qd
    frm, to = qd[0]["from"], qd[0]["to"]
    assert median_share(bds, ("h1", 5302), frm, to) >= 0.9, table(paced)
    assert share(paced, frm, to) >= 0.75, table(paced)   # of the mean too


def test_shared_bottleneck_wait_is_backlog_over_rate(run, bds, qdisc: QdiscSamples) -> None:
    rate = load_topology(TOPOLOGY).links[0].a_tbf.rate_bps / 8      # bytes/s
    paced = samples(bds, ("h1", 5302))
    # The steady part: the bulk flow's slow start is over, neither flow is ending
    # (reference clock = CLOCK_MONOTONIC, the clock the tc reads are timed with).
    start = min(bd["ts_ns"] for bd in paced) / 1e9 + 1.0
    end = max(bd["ts_ns"] for bd in paced) / 1e9 - 1.0
    waits = [s["duration_ns"] for bd in paced if start <= bd["ts_ns"] / 1e9 <= end
             for s in bd["segments"] if s["layer"] == "qdisc" and s["hosts"] == ["h1"]]
    assert len(waits) >= 50, len(waits)
    reads = qdisc.between(start, end)
    assert len(reads) >= 100, (len(reads), len(qdisc.reads))
    # A steady backlog: hardly ever empty (an idle tbf refills its bucket, and the next
    # packets pass without waiting for the backlog).
    empty = sum(1 for _, backlog, _ in reads if backlog == 0) / len(reads)
    assert empty <= 0.05, (empty, len(reads))
    # The backlog drains at what tc counts as sent: the tbf's rate, unless the machine is
    # too busy to run its timer in time (a CI run: 66 % of it, the backlog empty 1 % of the
    # time); the wait then follows the rate achieved (Little's law), not the configured one.
    sent = (reads[-1][2] - reads[0][2]) / (reads[-1][0] - reads[0][0])
    assert 0.5 * rate <= sent <= 1.1 * rate, (sent, rate)
    # A paced packet waits for the frames ahead and its own, less what the head frame has
    # already earned (half a frame on average); the backlog tc reports holds the paced
    # flow's own previous frame ~60 % of the time (6 ms of every 10), never ahead of the
    # next one. Together ~0.1 frame (~1 %): backlog / drain rate is the figure, with the
    # backlog's time average (its median moves in whole frames, ~10 % here).
    backlog = statistics.mean(b for _, b, _ in reads)
    got, want = statistics.median(waits), backlog / sent * 1e9
    assert abs(got / want - 1) <= QDISC_TOL, (
        f"median qdisc wait {got / 1e6:.2f} ms, backlog {backlog:.0f} B / sent "
        f"{sent * 8 / 1e6:.1f} Mbit/s = {want / 1e6:.2f} ms ({len(reads)} tc reads, "
        f"rate {rate * 8 / 1e6:.0f} Mbit/s, empty {empty:.1%})")


def test_bulk_flow_waits_in_its_own_send_buffer(run) -> None:
    """The truth the breakdown must tell: a bulk sender's bytes queue in its socket."""
    bulk = next(f for f in run["flows"] if f["name"] == "bulk")
    top = max(bulk["segments"], key=lambda s: s["mean_us"] * s["count"])
    assert (top["from"], top["layer"]) == ("h1:sock_send", "socket"), top


FLOWS = {"bulk": ("h1", 5301), "paced": ("h1", 5302), "slow": ("h2", 5303)}


@pytest.mark.parametrize("name", FLOWS)
def test_wire_over_a_veth_is_microseconds(bds, name: str) -> None:
    flow = FLOWS[name]
    wires = [s for bd in samples(bds, flow) for s in bd["segments"] if s["layer"] == "wire"]
    assert len(wires) >= 50, (name, len(wires))
    assert {tuple(w["hosts"]) for w in wires} == {(flow[0], "h2" if flow[0] == "h1" else "h1")}
    worst = max(w["error_bound_ns"] for w in wires)
    assert worst <= WIRE_BOUND_MAX_NS, (name, worst)
    below = [(w["duration_ns"], w["error_bound_ns"]) for w in wires
             if w["duration_ns"] < -w["error_bound_ns"]]
    assert not below, (name, len(below), below[:5])
    median = statistics.median(w["duration_ns"] for w in wires)
    assert abs(median) <= WIRE_MEDIAN_MAX_NS, (name, median)
