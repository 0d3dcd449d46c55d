"""The agent end to end: real probes on this kernel, a namespace topology (h1 ==veth== h2
--br0-- c1), one agent per simulated host, records on the real Kafka broker."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer
from producer_helpers import (
    PREFIX,
    consume,
    links_of,
    loopback_burst,
    read_topic,
    running_agents,
    tbf,
    tcp_transfer,
    true_ns,
    udp_send,
    wall_clock,
)

from latscope.kafka import KafkaSettings
from latscope.producers.agent import Agent, AgentSettings
from latscope.schemas import codec

pytestmark = [pytest.mark.root, pytest.mark.stack]

SIZE = 14480        # 10 MSS: enough sampled bytes in a short transfer
TX_PATH = ["sock_send", "tcp_tx", "ip_out", "ip_post", "dev_queue", "dev_xmit"]


@contextlib.contextmanager
def agents(net: Any, topic: str, bootstrap: str, sample_size: int = SIZE,
           **kw: Any) -> Iterator[dict[str, Agent]]:
    """One agent for h1 (its namespace) and one for h2 (its namespace and container c1)."""
    covered = {"h1": ["h1"], "h2": ["h2", "c1"]}
    with running_agents({host: AgentSettings(
            host=host, netns=[net.ns_name(h) for h in hosts], clock=net.clock(host),
            sample_size=sample_size, topic=topic, kafka=KafkaSettings(bootstrap), **kw)
            for host, hosts in covered.items()}) as run:
        yield run
    for a in run.values():
        c = a.status()["counters"]
        assert c["ringbuf_drops"] == 0 and c["unparsed"] == 0 and c["failed_deliveries"] == 0, c


def by_host(records: list[dict], sport: int) -> dict[str, dict[int, dict]]:
    """First transmissions of the flow's sampled bytes, per host and byte (exactly one)."""
    out: dict[str, dict[int, dict]] = {}
    for r in records:
        if r["flow"]["sport"] == sport and not r["retrans"]:
            assert r["seq"] not in out.setdefault(r["host"], {}), "one record per byte and host"
            out[r["host"]][r["seq"]] = r
    return out


def points(rec: dict) -> list[str]:
    return [h["point"] for h in rec["hits"]]


def gaps_counted(recs: dict[str, dict[int, list[dict]]], seqs: set[int], exit_dev: str,
                 counters: dict[str, dict]) -> bool:
    """Records of seqs that reached their host's last point (h1: dev_xmit on its exit, h2:
    the read) incomplete were flagged so by the agent's gap check: each is counted there."""
    def reached(host: str, r: dict) -> bool:
        last = r["hits"][-1]
        return last["point"] == "sock_recv" if host == "h2" else \
            any(h["point"] == "dev_xmit" and h["dev"] == exit_dev for h in r["hits"])
    return all(counters[host]["gaps"] >= sum(
        1 for s in seqs for r in recs[host].get(s, []) if not r["complete"] and reached(host, r))
        for host in ("h1", "h2"))


def paired(net: Any, r1: dict, r2: dict, copies1: list[dict]) -> bool:
    """Is h2's record r2 of the copy h1's record r1 describes? By cause, not by a time
    bound: h2 saw it after it left h1 (within the clocks' exactness: the injected offsets
    are undone), and before TCP on h1 started any other copy of the byte (copies1: h1's
    records of it). A hop alone is no bound: h1's dev_xmit to h2's dev_rx took up to
    5.6 ms with the softirq deferred under the suite's load (tens of µs when idle), while
    the earliest resend of a byte that had left h1 came 8.6 ms after it (a loss probe)."""
    start = true_ns(net, "h1", next((h for h in r1["hits"] if h["point"] == "tcp_tx"),
                                    r1["hits"][0])["ts_ns"])
    left = true_ns(net, "h1", r1["hits"][-1]["ts_ns"])
    seen = true_ns(net, "h2", r2["hits"][0]["ts_ns"])
    others = [true_ns(net, "h1", h["ts_ns"]) for r in copies1 if r is not r1
              for h in r["hits"] if h["point"] == "tcp_tx"]
    return left < seen and not any(start < t < seen for t in others)


def lacking(rec: dict) -> set[str]:
    """Points a record's own hits imply it passed but has none for: dev_rx before ip_pre on
    a device, dev_queue and dev_xmit after ip_post on one; for a byte the app read, also
    tcp_rx and ip_in, and dev_xmit after each dev_queue. (A copy a qdisc dropped lacks
    none: nothing after the drop implies more.)"""
    have = {(h["point"], h["ifindex"], h["netns"]) for h in rec["hits"]}
    need: dict[str, tuple[str, ...]] = {"ip_pre": ("dev_rx",),
                                        "ip_post": ("dev_queue", "dev_xmit")}
    read = "sock_recv" in points(rec)
    if read:
        need["dev_queue"] = ("dev_xmit",)
    out = {n for p, i, ns in have for n in need.get(p, ()) if (n, i, ns) not in have}
    if read:
        out |= {"ip_in", "tcp_rx"} - set(points(rec))
    return out


def test_a_named_container_is_a_host_of_its_own(net: Any, stack: Any, topic_name: str) -> None:
    """h2's agent names c1's namespace (AgentSettings.names, as `--cover-address c1=ADDR`
    does): a byte to c1's socket gives h2 a record that ends where the byte leaves h2 for c1
    (dev_xmit on h2's end of the veth into c1, from the topology's wiring) and c1 one of its
    own, under its name, from its end of that veth to the read; each holds only its own
    namespace's hits (inodes from the kernel), and c1's follow h2's (one clock)."""
    c1_ns, h2_ns = net.netns_inode("c1"), net.netns_inode("h2")
    with agents(net, topic_name, stack.kafka_bootstrap, names={net.ns_name("c1"): "c1"}) as ag:
        assert ag["h2"].status()["names"] == {"c1": [net.ns_name("c1")]}
        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, 1_000_000)
        assert tr.received == 1_000_000
        deadline = time.monotonic() + 10
        while ag["h2"].grouper.counters.records < 130 and time.monotonic() < deadline:
            time.sleep(0.05)
    recs = by_host(consume(topic_name, stack.kafka_bootstrap, 3 * 69), tr.sport)
    h1, h2, c1 = (recs.get(h, {}) for h in ("h1", "h2", "c1"))
    assert len(h1) >= 65 and set(h1) == set(h2) == set(c1), (len(h1), len(h2), len(c1))
    whole = [s for s in h1 if h2[s]["complete"] and c1[s]["complete"]]
    assert len(whole) >= 0.9 * len(h1), (len(whole), len(h1))
    for s in whole:
        r2, rc = h2[s], c1[s]
        assert {h["netns"] for h in r2["hits"]} == {h2_ns}
        assert {h["netns"] for h in rc["hits"]} == {c1_ns}
        last = r2["hits"][-1]
        assert (last["point"], last["dev"]) == ("dev_xmit", f"{PREFIX}-1b"), points(r2)
        first = rc["hits"][0]
        assert (first["point"], first["dev"]) == ("dev_rx", f"{PREFIX}-1a"), points(rc)
        assert points(rc)[-1] == "sock_recv"
        assert first["ts_ns"] >= last["ts_ns"]


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_flow_every_point_both_hosts_same_bytes(net: Any, stack: Any, topic_name: str,
                                                    family: int) -> None:
    dst_addr = "10.2.0.2" if family == 4 else "fd00:2::2"
    with agents(net, topic_name, stack.kafka_bootstrap) as ag:
        tr = tcp_transfer(net, "h1", "c1", dst_addr, 5201, 2_000_000)
        assert tr.received == 2_000_000
        # wait for the receiving host's records (complete at sock_recv)
        deadline = time.monotonic() + 10
        while ag["h2"].grouper.counters.records < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
    counters = {h: a.status()["counters"] for h, a in ag.items()}
    recs = by_host(consume(topic_name, stack.kafka_bootstrap, 2 * 138), tr.sport)
    h1, h2 = recs.get("h1", {}), recs.get("h2", {})
    assert len(h1) >= 130 and set(h1) == set(h2)        # both hosts picked the same bytes
    assert all(seq % SIZE == 0 for seq in h1)
    # Every point for every byte. A resent copy is flagged (by_host leaves it out), and so
    # is the first copy of a resent byte that died on its way: before, that first copy came
    # out unflagged without its last RX points (a resend reaching the receiving host while
    # the first copy was still inside it or had been dropped there), the records this test
    # used to allow for 5 % of the bytes. What is left is the kernel's: now and then it runs
    # no probe at all on some tracepoints (device points, tcp_probe) for a few ms (measured
    # 3-16 ms at a time; no ring-buffer drop, no recursion miss in the kernel's accounting,
    # a second agent and an unrelated program miss the same packets, netfilter and sock_ops
    # hooks keep firing). A record lacking such a point is flagged incomplete and counted
    # (gaps), never passed as whole, and all of them fall in one such window. Measured in
    # this test's configuration: none in 250 runs.
    partial = sorted(s for s in h2 if not (h1[s]["complete"] and h2[s]["complete"]))
    for s in partial:
        assert all(lacking(r) for r in (h1[s], h2[s]) if not r["complete"]), \
            (points(h1[s]), points(h2[s]), counters)
    assert gaps_counted({"h1": {s: [h1[s]] for s in h1}, "h2": {s: [h2[s]] for s in h2}},
                        set(partial), f"{PREFIX}-0a", counters)
    if partial:
        at = [true_ns(net, "h1", h["ts_ns"]) for s in partial for h in h1[s]["hits"]
              if h["point"] == "ip_post"]
        assert at and max(at) - min(at) <= 20_000_000, (partial, counters)
    for seq in set(h1) - set(partial):
        r1, r2 = h1[seq], h2[seq]
        assert r1["flow"]["family"] == family and r1["flow"]["dport"] == 5201
        assert points(r1) == TX_PATH, points(r1)         # in path order (sorted by time)
        assert r1["complete"]                             # left h1 through its exit device
        assert {h["dev"] for h in r1["hits"][4:]} == {f"{PREFIX}-0a"}
        p2 = points(r2)
        assert p2[0] == "dev_rx" and p2[-3:] == ["ip_in", "tcp_rx", "sock_recv"], p2
        assert r2["complete"]
        devs = [f"{h['point']}@{h['dev']}" for h in r2["hits"] if h["dev"]]
        assert devs[:2] == [f"dev_rx@{PREFIX}-0b", f"ip_pre@{PREFIX}-0b"], devs
        for want in ("dev_queue@br0", "dev_xmit@br0", f"dev_queue@{PREFIX}-1b", f"dev_xmit@{PREFIX}-1b",
                     f"dev_rx@{PREFIX}-1a", f"ip_in@{PREFIX}-1a"):
            assert want in devs, (want, devs)
        netns = {h["netns"] for h in r2["hits"]}
        assert netns == {net.netns_inode("h2"), net.netns_inode("c1")}
        assert {h["netns"] for h in r1["hits"]} == {net.netns_inode("h1")}
    # h1's clock runs 5 ms ahead: its timestamps show it against h2's
    seq = min(h1)
    assert h1[seq]["hits"][-1]["ts_ns"] - h2[seq]["hits"][0]["ts_ns"] > 4_000_000


def test_an_idle_agent_sleeps_until_its_probes_wake_it(net: Any, stack: Any,
                                                       topic_name: str) -> None:
    """After a turn that read nothing, with no sampled byte open, an agent's loop waits
    IDLE_POLL_MS (500 ms), not POLL_MS (100 ms): a quiet host pays few wakeups. The probes
    wake it with the first record it has not read (agent_idle), so a flow that starts
    meanwhile is read at once and every host still records the same bytes, whole. Against
    probes that ignored the flag, idle_woken stayed 0 (nothing else wakes the loop: the
    ring never fills a quarter). A paced sender keeps the loop turning: one sampled byte
    per write, every 10 ms, each done on both hosts within a few ms; a loop that slept
    whenever nothing was open was woken by nearly every one (against at most 5)."""
    with agents(net, topic_name, stack.kafka_bootstrap) as ag:
        time.sleep(1.0)
        before = {h: (a.counters.idle_waits, a.counters.idle_woken) for h, a in ag.items()}
        time.sleep(3.0)
        quiet = {h: a.counters.idle_waits - before[h][0] for h, a in ag.items()}
        # 3 s of 500 ms waits: 6 (turns of 100 ms would be 30)
        assert all(4 <= n <= 8 for n in quiet.values()), quiet
        assert all(a.counters.idle_woken == before[h][1] for h, a in ag.items())
        n = 200
        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, n * SIZE, write_size=SIZE,
                          write_gap_ms=10)
        deadline = time.monotonic() + 10
        while ag["h2"].grouper.counters.records < n and time.monotonic() < deadline:
            time.sleep(0.05)
    woken = {h: a.counters.idle_woken - before[h][1] for h, a in ag.items()}
    assert all(1 <= w <= 5 for w in woken.values()), woken
    recs = by_host(consume(topic_name, stack.kafka_bootstrap, 2 * n), tr.sport)
    h1, h2 = recs.get("h1", {}), recs.get("h2", {})
    assert len(h1) >= n and set(h1) == set(h2), (sorted(h1), sorted(h2))
    assert all(h1[s]["complete"] and h2[s]["complete"] for s in h1), \
        [(points(h1[s]), points(h2[s])) for s in h1 if not (h1[s]["complete"]
                                                           and h2[s]["complete"])]


def test_records_wait_for_their_partition_yet_reach_kafka_inside_the_join_window(
        net: Any, stack: Any, topic_name: str) -> None:
    """A paced flow (a sampled byte every 10 ms for 4 s): each host's records of it go out
    about once a second (a partition's records wait in the publisher until the oldest is
    due: one produce request then, not one every turn), and every record still reaches the
    broker within the worker's join window of its first hit (the broker's append time
    against the hit on the wall clock, the injected clock offset undone). Producing every
    turn, as before, put about 40 messages per host in the topic here."""
    n = 400
    with agents(net, topic_name, stack.kafka_bootstrap) as ag:
        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, n * SIZE, write_size=SIZE,
                          write_gap_ms=10)
        deadline = time.monotonic() + 10
        while ag["h2"].status()["counters"]["published"] < n and time.monotonic() < deadline:
            time.sleep(0.05)
    window_ns = ag["h2"].s.join_window_ms * 1_000_000

    def take(m: Any, _n: int) -> list[dict]:
        return [{**e, "message": (m.partition(), m.offset()), "arrival_ns": m.timestamp()[1]
                 * 1_000_000} for e in codec.decode(m.value())[1]["events"]]
    recs = [r for r in read_topic(topic_name, stack.kafka_bootstrap, 2 * n, take)
            if r["flow"]["sport"] == tr.sport]
    for host in ("h1", "h2"):
        mine = [r for r in recs if r["host"] == host]
        assert len(mine) >= n, (host, len(mine))
        span_s = (max(r["arrival_ns"] for r in mine) - min(r["arrival_ns"] for r in mine)) / 1e9
        messages = {r["message"] for r in mine}
        assert span_s >= 3 and len(messages) <= span_s + 2, (host, len(messages), span_s)
        wall = wall_clock(net, host)
        late = [(r["seq"], (r["arrival_ns"] - wall(r["hits"][0]["ts_ns"])) / 1e6) for r in mine]
        # the broker's clock is this machine's: an arrival before its first hit is an error
        assert all(0 < ms <= window_ns / 1e6 for _, ms in late), sorted(late, key=lambda x: -x[1])[:5]


def test_udp_flow_sampled_by_hash(net: Any, stack: Any, topic_name: str) -> None:
    with agents(net, topic_name, stack.kafka_bootstrap) as ag:
        sport = udp_send(net, "h1", "c1", "10.2.0.2", 5300, 2000)
        deadline = time.monotonic() + 10
        while ag["h2"].grouper.counters.samples < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    recs = by_host(consume(topic_name, stack.kafka_bootstrap, 40, timeout=15), sport)
    h1, h2 = recs.get("h1", {}), recs.get("h2", {})
    # one in SIZE/1448 = 10 datagrams is sampled, by hash: both hosts pick the same ones
    assert 100 <= len(h1) <= 320 and set(h1) == set(h2)
    r1, r2 = h1[min(h1)], h2[min(h1)]
    assert r1["flow"]["proto"] == "udp"
    # without agent.udp_socket_points UDP starts at ip_out and ends, complete, at ip_in
    # (tests/producers/test_udp_sock.py: with them)
    assert points(r1) == ["ip_out", "ip_post", "dev_queue", "dev_xmit"]
    assert points(r2)[:2] == ["dev_rx", "ip_pre"] and points(r2)[-1] == "ip_in"
    assert r1["complete"] and r2["complete"]


def gaps_us(recs: list[dict], a: str, b: str, dev: str | None = None) -> list[float]:
    """Per record holding both: time from point a to point b (on dev, when given), in µs."""
    out = []
    for r in recs:
        ts = {h["point"]: h["ts_ns"] for h in r["hits"] if dev is None or h["dev"] in (dev, None)}
        if a in ts and b in ts:
            out.append((ts[b] - ts[a]) / 1000)
    return out


def run_flow(net: Any, stack: Any, topic: str, nbytes: int, port: int = 5201,
             reader_delay_ms: int = 0, read_size: int = 1 << 16,
             **agent_kw: Any) -> tuple[dict[str, list[dict]], dict[str, Agent]]:
    """One h1 -> c1 transfer; every record of it (retransmitted copies too), per host."""
    with agents(net, topic, stack.kafka_bootstrap, **agent_kw) as ag:
        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", port, nbytes,
                          reader_delay_ms=reader_delay_ms, read_size=read_size)
        assert tr.received == nbytes
    want = sum(a.grouper.counters.records for a in ag.values())
    out: dict[str, list[dict]] = {}
    for r in consume(topic, stack.kafka_bootstrap, want):
        if r["flow"]["sport"] == tr.sport:
            out.setdefault(r["host"], []).append(r)
    return out, ag


def test_slow_reader_shows_between_tcp_rx_and_sock_recv(net: Any, stack: Any,
                                                        topic_name: str) -> None:
    recs, _ = run_flow(net, stack, topic_name, 600_000, reader_delay_ms=50, read_size=16384,
                       filter_retrans=False)
    slow = gaps_us(recs["h2"], "tcp_rx", "sock_recv")
    assert len(slow) >= 30
    # 50 ms between 16 KB reads: bytes wait in the receive queue for many reads
    assert statistics.median(slow) > 40_000, statistics.median(slow)
    # ... and nowhere else on the receiving host
    assert statistics.median(gaps_us(recs["h2"], "dev_rx", "tcp_rx")) < 5_000


def test_a_byte_waiting_past_the_hold_is_still_joined(net: Any, stack: Any,
                                                      topic_name: str) -> None:
    """The app reads slowly (16 KB every 250 ms): bytes wait in c1's receive queue for up
    to ~3 s. A TCP byte still inside a host waits up to the hold for its next hit, then is
    published incomplete; its late read is counted (late_socket), not published as a
    one-point record. So every host's record of a byte reaches Kafka within the worker's
    join window of the other's (their append times), and no byte is published in halves
    (before: a 5 s hold against the worker's 1.5 s window)."""
    recs, ag = run_flow(net, stack, topic_name, 200_000, reader_delay_ms=250, read_size=16384,
                        filter_retrans=False)
    window = ag["h2"].s.join_window_ms
    # A byte TCP sent again is left out: either host may flag its original copy (h2 does
    # when that copy had not completed there once the resend came: the reader's zero
    # window), so its first copies need not pair (the worker joins flagged copies apart).
    resent = {r["seq"] for h in recs for r in recs[h] if r["retrans"]}
    first = {h: [r for r in recs[h] if r["seq"] not in resent] for h in ("h1", "h2")}
    per = {h: [r["seq"] for r in first[h]] for h in first}
    halves = {h: [(r["seq"], points(r)) for r in first[h] if per[h].count(r["seq"]) > 1]
              for h in per}
    assert halves == {"h1": [], "h2": []}, ("one record per byte and host", halves)
    h1, h2 = ({r["seq"]: r for r in first[h]} for h in ("h1", "h2"))
    assert set(h1) == set(h2) and len(h1) >= 10, f"{sorted(h1)} {sorted(h2)} {sorted(resent)}"
    spread = {s: abs(h2[s]["arrival_ms"] - h1[s]["arrival_ms"]) for s in h1}
    assert max(spread.values()) <= window, spread
    # read after the hold: no record of the byte on h2 holds its read (resent bytes too)
    read = {r["seq"] for r in recs["h2"] if points(r)[-1] == "sock_recv"}
    waited = {r["seq"] for r in recs["h2"]} - read
    assert waited and all(not r["complete"] for r in recs["h2"] if r["seq"] in waited), waited
    assert ag["h2"].grouper.counters.late_socket == len(waited), (waited, resent)


def test_tbf_shows_between_dev_queue_and_dev_xmit(net: Any, stack: Any, topic_name: str) -> None:
    with tbf(net, "h1", "rate", "20mbit", "burst", "16kb", "latency", "200ms", dev=f"{PREFIX}-0a"):
        recs, _ = run_flow(net, stack, topic_name, 2_000_000)
    qd = gaps_us(recs["h1"], "dev_queue", "dev_xmit", dev=f"{PREFIX}-0a")
    assert len(qd) >= 100
    assert statistics.median(qd) > 2_000, statistics.median(qd)      # queued in tbf
    assert statistics.median(gaps_us(recs["h1"], "ip_out", "ip_post")) < 1_000


def kernel_counters(net: Any, host: str, dev: str) -> dict[str, int]:
    """The kernel's own counts in a host's namespace: TCP retransmissions (all of the
    namespace's sockets), resends the local qdisc refused, and the qdisc's drops on dev."""
    ns = net.ns_name(host)
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", "TcpRetransSegs",
                          "TcpExtTCPRetransFail"], check=True, capture_output=True,
                         text=True).stdout
    counts = {f[0]: int(f[1]) for f in (line.split() for line in out.splitlines()[1:]) if
              len(f) > 1}
    qdisc = json.loads(subprocess.run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev],
                                      check=True, capture_output=True, text=True).stdout)
    counts["qdisc_drops"] = sum(q.get("drops", 0) for q in qdisc)
    return counts


@pytest.mark.parametrize("filter_retrans", [False, True])
def test_resends_through_a_dropping_tbf_are_flagged_on_every_host(
        net: Any, stack: Any, topic_name: str, filter_retrans: bool) -> None:
    """h1's qdisc drops (a tiny tbf limit), so TCP sends bytes again. A resent byte is
    flagged on every host it crosses (h2 and c1 have no retransmit tracepoint: the sender's
    mark in the segment tells them), the original's record included where it died; with
    filter_retrans none is published. Nothing unflagged pairs a first copy with a resend
    (a cross-host gap the size of a recovery), and no byte is published in halves. The
    port allow-list keeps the other flow out."""
    dev = f"{PREFIX}-0a"
    with tbf(net, "h1", "rate", "20mbit", "burst", "8kb", "limit", "12kb", dev=dev):
        k0 = kernel_counters(net, "h1", dev)
        with agents(net, topic_name, stack.kafka_bootstrap, sample_size=1448,
                    filter_retrans=filter_retrans, ports=[5201], resend_mark=True) as ag:
            other = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5202, 300_000)
            tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, 1_500_000)
            assert tr.received == 1_500_000 and other.received == 300_000
        k1 = kernel_counters(net, "h1", dev)
    kern = {k: k1[k] - k0.get(k, 0) for k in k1}
    want = sum(a.grouper.counters.records for a in ag.values())
    all_recs = consume(topic_name, stack.kafka_bootstrap, want)
    assert all_recs and len(all_recs) == want
    assert all(5201 in (r["flow"]["sport"], r["flow"]["dport"]) for r in all_recs)  # port filter
    recs: dict[str, dict[int, list[dict]]] = {"h1": {}, "h2": {}}
    for r in all_recs:
        if r["flow"]["sport"] == tr.sport:
            recs[r["host"]].setdefault(r["seq"], []).append(r)
    c1, c2 = ag["h1"].grouper.counters, ag["h2"].grouper.counters
    st = {h: a.status()["counters"] for h, a in ag.items()}
    info = (kern, tr.retrans, st)
    # The kernel did resend (TCP_INFO of the socket); both hosts know resent bytes.
    assert tr.retrans > 0 and c1.retrans > 0 and c2.retrans > 0, info

    # No byte in halves, no first copy paired with a resend: the unflagged records of a
    # byte are whole on both hosts, and h2's is of the copy h1's describes (paired).
    unflagged = {h: {s: [r for r in rs if not r["retrans"]] for s, rs in recs[h].items()}
                 for h in recs}
    # A record may lack device points (and tcp_rx) when the kernel did not run the probes
    # of those tracepoints for a few ms (measured: 3-16 ms at a time, no ring-buffer drop, no
    # recursion miss; see the note at test_tcp_flow_...): it is flagged incomplete, counted
    # (gaps), never passed as whole. At most one such window's worth here: 20 ms of this
    # 20 Mbit/s flow is 36 sampled bytes (measured: up to 28 in one run, usually none).
    dark = set()
    for seq in set(unflagged["h1"]) | set(unflagged["h2"]):
        r1, r2 = unflagged["h1"].get(seq, []), unflagged["h2"].get(seq, [])
        if not r1 and not r2:
            continue
        assert len(r1) == 1 and len(r2) == 1, (seq, r1, r2)
        r1, r2 = r1[0], r2[0]
        if not (r1["complete"] and r2["complete"]):
            assert all(lacking(r) for r in (r1, r2) if not r["complete"]), \
                (seq, points(r1), points(r2))
            dark.add(seq)
        assert paired(net, r1, r2, recs["h1"][seq]), (
            seq, [points(r) for r in recs["h1"][seq]], points(r2),
            true_ns(net, "h2", r2["hits"][0]["ts_ns"]) - true_ns(net, "h1", r1["hits"][-1]["ts_ns"]))
    assert len(dark) <= 36, (len(dark), info)
    assert gaps_counted(unflagged, dark, dev, st)
    # Nor in halves on the sender, flagged or not: every copy's record holds its start below
    # the socket, tcp_tx (or ip_out) (seen before: a sock_send alone, a first copy taken for
    # a resend because the retry that carried it also resent bytes; a dev_xmit alone, a
    # resend published while it waited in the qdisc).
    halves = [(s, points(r)) for s, v in recs["h1"].items() for r in v
              if not {"tcp_tx", "ip_out"} & set(points(r))]
    assert not halves, (len(halves), halves[:5])

    # every resend left h1 marked
    assert st["h1"]["resent_marked"] > 0 and st["h1"]["mark_failed"] == 0, info
    if filter_retrans:
        assert not any(r["retrans"] for rs in recs.values() for v in rs.values() for r in v)
        assert c1.retrans_dropped >= c1.retrans and c2.retrans_dropped >= c2.retrans, info
        return
    # Every record of a resent byte is flagged on every host; the one exception is a
    # spurious resend (the original got through whole: a true sample, unflagged on both).
    resent = {s for rs in recs.values() for s, v in rs.items() if any(r["retrans"] for r in v)}
    assert resent == {s for s, v in recs["h2"].items() if any(r["retrans"] for r in v)}
    spurious = {s for s in resent if unflagged["h1"].get(s) and unflagged["h2"].get(s)}
    assert len(spurious) <= 3, (len(spurious), len(resent))   # measured: 0 here; up to 3 per
    # run in the loaded runs (tail loss probes the receiver had already got)
    for seq in resent - spurious:
        assert all(r["retrans"] for h in recs for r in recs[h].get(seq, [])), seq
    # Against the kernel's count: each resent segment (1440 bytes, stride 1448) carries one
    # sampled byte, so h1 sent a marked copy of a sampled byte for (nearly) each segment the
    # kernel counts as retransmitted, plus those its qdisc refused before TCP counted them.
    copies = [r for v in recs["h1"].values() for r in v if r["retrans"] and points(r)[0] == "tcp_tx"]
    print("KERNEL", kern, "tcpi_total_retrans", tr.retrans, "copies", len(copies),
          "resent", len(resent), "spurious", len(spurious),
          "h2 flagged copies", sum(1 for v in recs["h2"].values() for r in v if r["retrans"]))
    assert tr.retrans * 0.99 - 2 <= len(copies), (len(copies), info)
    # a resend is never presented as whole unless it is one: it starts at TCP (the app
    # handed the byte over once)
    assert all("sock_send" not in points(r) for r in copies)


def test_a_drop_inside_the_receiving_host_is_never_an_unflagged_partial_record(
        net: Any, stack: Any, topic_name: str) -> None:
    """The mechanism behind the records that lacked their last RX points, made certain: h2's
    qdisc towards c1 drops (a tiny tbf limit), so first copies die inside the receiving
    host after passing some of its points, and TCP resends them. Such a first copy is
    flagged (it died here), as is its resend; no unflagged record lacks points. On h1 the
    first copies left whole and stay unflagged (true samples of that copy), as the design
    wants on every host a copy completed."""
    dev = f"{PREFIX}-1b"
    with tbf(net, "h2", "rate", "20mbit", "burst", "8kb", "limit", "12kb", dev=dev):
        recs, ag = run_flow(net, stack, topic_name, 1_000_000, sample_size=1448,
                            filter_retrans=False, resend_mark=True)
    c2 = ag["h2"].grouper.counters
    assert c2.retrans > 0
    per2: dict[int, list[dict]] = {}
    for r in recs["h2"]:
        per2.setdefault(r["seq"], []).append(r)
    died = {s for s, v in per2.items() if any(r["retrans"] and not r["complete"] and
                                              points(r)[-1] == "dev_queue" for r in v)}
    assert died, "the tbf dropped no sampled byte's first copy"
    for seq, v in per2.items():
        first = [r for r in v if not r["retrans"]]
        assert len(first) <= 1, (seq, [points(r) for r in v])
        for r in first:     # whole, or lacking points the kernel did not report (counted)
            assert r["complete"] or lacking(r), (seq, points(r))
        if seq in died:
            assert not first, (seq, [points(r) for r in v])
    dark = {s for s, v in per2.items() for r in v if not r["retrans"] and not r["complete"]}
    assert len(dark) <= 36, len(dark)


class SegmentTap:
    """The TCP header length of every data segment to a port, as the kernel's packet tap
    (AF_PACKET) on a device sees it: the wire's truth, not ours."""

    def __init__(self, net: Any, host: str, dev: str, dport: int) -> None:
        with net.enter(host):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        # room for the whole transfer's frames: a reader thread that gets no CPU until the
        # transfer is over (ci36, a loaded VM: nothing read) still finds them queued
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((dev, 0))
        self.sock.settimeout(0.2)
        self.dport, self.lengths = dport, Counter[int]()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                f = self.sock.recv(65536)
            except TimeoutError:
                if self._stop.is_set():      # stopped, and what was queued is read
                    return
                continue
            ip = f[14:]
            if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            tcp = ip[(ip[0] & 15) * 4:]
            doff = (tcp[12] >> 4) * 4
            if int.from_bytes(tcp[2:4], "big") == self.dport and \
                    int.from_bytes(ip[2:4], "big") - (ip[0] & 15) * 4 > doff:
                self.lengths[doff] += 1

    def close(self) -> Counter[int]:
        self._stop.set()
        self._t.join(5)
        self.sock.close()
        return self.lengths


@pytest.mark.parametrize("resend_mark", [False, True])
def test_tcp_tx_changes_nothing_on_the_wire_unless_marking(net: Any, stack: Any, topic_name: str,
                                                           resend_mark: bool) -> None:
    """Data segments h1 sends carry the TCP header they carry without LatScope (the
    baseline, measured first), with tcp_tx observing; only --resend-mark adds its 8 option
    bytes. Either way tcp_tx reports the bytes: h1's records hold the whole send path."""
    dev, port = f"{PREFIX}-0b", 5301 + resend_mark * 10      # h2's end of the h1 link

    def tapped(port: int) -> Counter[int]:
        tap = SegmentTap(net, "h2", dev, port)
        try:
            assert tcp_transfer(net, "h1", "c1", "10.2.0.2", port, 1_000_000).received == 1_000_000
        finally:
            lengths = tap.close()
        assert sum(lengths.values()) >= 3, lengths     # GRO: few, large frames
        return lengths

    baseline = tapped(port)
    with agents(net, topic_name, stack.kafka_bootstrap, resend_mark=resend_mark) as ag:
        seen = tapped(port + 1)
    assert set(seen) == ({h + 8 for h in baseline} if resend_mark else set(baseline)), \
        (baseline, seen)
    want = sum(a.grouper.counters.records for a in ag.values())
    h1 = [r for r in consume(topic_name, stack.kafka_bootstrap, want)
          if r["host"] == "h1" and r["flow"]["dport"] == port + 1 and not r["retrans"]]
    assert len(h1) >= 20 and all(points(r) == TX_PATH for r in h1), \
        [points(r) for r in h1 if points(r) != TX_PATH][:3]


def test_records_on_the_real_topic_decode(net: Any, stack: Any) -> None:
    """The default topic (latscope.layer-events), read from the offsets it had before the
    run: this flow's records decode with the schema, keyed by flow id."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from latscope.schemas.records import TOPIC_LAYER_EVENTS

    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    c = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"{PREFIX}-real-topic",
                  "enable.auto.commit": False})
    try:
        with agents(net, TOPIC_LAYER_EVENTS, stack.kafka_bootstrap):
            meta = admin.list_topics(TOPIC_LAYER_EVENTS, timeout=10).topics[TOPIC_LAYER_EVENTS]
            start = [TopicPartition(TOPIC_LAYER_EVENTS, p,
                                    c.get_watermark_offsets(
                                        TopicPartition(TOPIC_LAYER_EVENTS, p), timeout=10)[1])
                     for p in meta.partitions]
            tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, 500_000)
        c.assign(start)
        want_key = f"tcp:10.1.0.1:{tr.sport}>10.2.0.2:5201".encode()
        mine: list[dict] = []
        deadline = time.monotonic() + 20
        while len(mine) < 2 * 30 and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                for rec in codec.decode(m.value(), expect="LayerEventBatch")[1]["events"]:
                    if rec["flow_id"] != want_key.decode():   # other writers share the topic
                        continue
                    assert rec["flow"]["sport"] == tr.sport and rec["flow"]["dport"] == 5201
                    mine.append(rec)
    finally:
        c.close()
    assert {r["host"] for r in mine} == {"h1", "h2"} and len(mine) >= 2 * 30


def test_xdp_point_opt_in(net: Any, stack: Any, topic_name: str) -> None:
    """--xdp: every device in the covered namespaces but bridges gets XDP (native on veth);
    the receiving host's records carry xdp hits, named by device, on the veths before their
    dev_rx; everything detaches afterwards."""
    with agents(net, topic_name, stack.kafka_bootstrap, xdp=True) as ag:
        st = ag["h2"].status()
        assert st["points"].get("xdp") and "xdp_refused" not in st, st
        assert "xdp_generic" not in st, st                 # veths: native XDP
        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5201, 1_000_000)
        assert tr.received == 1_000_000
    recs = by_host(consume(topic_name, stack.kafka_bootstrap, 2 * 69), tr.sport)
    h2 = recs["h2"]
    assert len(h2) >= 60
    for r in h2.values():
        if not r["complete"]:
            continue
        seq_points = [(h["point"], h["dev"]) for h in r["hits"]]
        for dev in (f"{PREFIX}-0b", f"{PREFIX}-1a"):     # native XDP: before the stack sees it
            assert seq_points.index(("xdp", dev)) < seq_points.index(("dev_rx", dev)), seq_points
    for host in ("h1", "h2", "c1"):
        links = json.loads(subprocess.run(["ip", "-n", net.ns_name(host), "-j", "link", "show"],
                                          check=True, capture_output=True, text=True).stdout)
        assert [lk["ifname"] for lk in links if "xdp" in lk] == []


def test_broker_unreachable_shutdown_counts_losses(scratch_netns: str) -> None:
    """No broker: the agent still stops promptly on request, detaches everything, and
    counts every record it could not deliver (nothing silent)."""
    a = Agent(AgentSettings(host="lsxa-nokafka", netns=[scratch_netns], sample_size=14480,
                            kafka=KafkaSettings("127.0.0.1:1"), topic="lsx-test-unreachable"))
    a.start()
    ours = links_of(os.getpid())
    stop = threading.Event()
    t = threading.Thread(target=a.run, args=(stop,), daemon=True)
    t.start()
    assert loopback_burst(scratch_netns, 2_000_000) == 2_000_000
    deadline = time.monotonic() + 10
    while a.grouper.counters.records < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    stop.set()
    t.join(30)
    assert not t.is_alive() and time.monotonic() - started < 15
    c = a.status()["counters"]
    assert c["records"] >= 100 and c["published"] == 0
    assert c["failed_deliveries"] == c["records"], c
    assert not (links_of(os.getpid()) & ours)
