"""Hook fallbacks chosen at start-up, on the real kernel (schemas/points.py candidates).

Two probe sets watch the same traffic through the test namespaces at once: one as the
kernel prefers (tp_btf), one with every tp_btf candidate forced off, so the raw_tp twins
serve those points. Both run inside the same tracepoint invocations, so each sampled byte
must get the same points, on the same devices, namespaces and CPUs, at nearly the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from producer_helpers import tcp_transfer, udp_send

from latscope.bpf import libbpf
from latscope.kafka import KafkaSettings
from latscope.producers.agent import Agent, AgentSettings
from latscope.producers.grouping import Record
from latscope.schemas.points import BY_NAME, RETRANS_HOOKS, all_hooks

pytestmark = pytest.mark.root
LATSCOPE = [sys.executable, "-m", "latscope"]
SIZE = 14480
TP_BTF = tuple(h.name for h in all_hooks() if h.kind == "tp_btf")
# Every point with a tp_btf candidate, and its raw_tp twin (the next candidate).
RAW = {p.name: next(h.name for h in p.hooks if h.kind == "raw_tp")
       for p in BY_NAME.values() if any(h.kind == "tp_btf" for h in p.hooks)}
DEVICE_RAW = {"dev_queue": "raw_tp/net_dev_queue", "dev_xmit": "raw_tp/net_dev_start_xmit",
              "dev_rx": "raw_tp/netif_receive_skb"}
HitT = tuple[str, Any, int, int, int]     # point, dev, netns, ifindex, cpu


def _agent(net: Any, skip: tuple[str, ...], udp_socket_points: bool = False) -> Agent:
    """An agent over the whole test network (never started: no Kafka, records read here),
    with the points that have a tp_btf candidate (two netfilter links of one priority in a
    namespace refuse each other; two sockops programs would both add option bytes)."""
    return Agent(AgentSettings(host="lsxa-fallback", sample_size=SIZE, filter_retrans=False,
                               netns=[net.ns_name(h) for h in ("h1", "h2", "c1")],
                               kafka=KafkaSettings("127.0.0.1:1"), points=tuple(RAW),
                               skip_hooks=skip, udp_socket_points=udp_socket_points,
                               native=False))   # reads Record hits


def _hits(agent: Agent, ring: libbpf.RingBuffer, sports: set[int]) -> dict[tuple, list]:
    """(flow, seq) -> its hits as (point, dev, netns, ifindex, cpu, ts), through the agent's
    own decoding and grouping."""
    out: list[Record] = []
    agent.process(ring.read(), out)
    agent.grouper.flush_all(out)
    by: dict[tuple, list] = {}
    for r in out:
        if r.flow[4] in sports:
            by.setdefault((r.flow, r.seq), []).extend(
                (h.point, h.dev, h.netns, h.ifindex, h.cpu, h.ts_ns) for h in r.hits)
    return {k: sorted(v, key=lambda h: (h[:5], h[5])) for k, v in by.items()}


def test_forced_off_tp_btf_served_by_raw_tp_with_the_same_hits(net: Any) -> None:
    assert set(DEVICE_RAW.items()) <= set(RAW.items())
    base, alt = _agent(net, (), True), _agent(net, TP_BTF, True)   # every candidate
    rings: list[libbpf.RingBuffer] = []
    try:
        for a in (base, alt):
            a.probes.load()
            a.probes.attach()
            rings.append(libbpf.RingBuffer(a.probes.events_fd))
        # the walk: preferred hooks by default; the raw_tp twins once tp_btf is forced off
        for point, raw in RAW.items():
            tp = next(h.name for h in BY_NAME[point].hooks if h.kind == "tp_btf")
            assert base.probes.attached[point] == tp
            assert alt.probes.attached[point] == raw, (point, alt.probes.attached)
            assert alt.probes.skipped()[point] == [
                {"hook": tp, "reason": f"forced off (--skip-hook {tp})"}]
        assert alt.probes.choices["retransmit"].hook == RETRANS_HOOKS[1]
        assert base.probes.skipped() == {} and "skipped" not in base.status()
        assert alt.status()["skipped"] == alt.probes.skipped()

        tr = tcp_transfer(net, "h1", "c1", "10.2.0.2", 5211, 2_000_000)
        assert tr.received == 2_000_000
        udp = udp_send(net, "h1", "c1", "10.2.0.2", 5311, 1500)
        time.sleep(0.2)
        got = [_hits(a, ring, {tr.sport, udp}) for a, ring in zip((base, alt), rings,
                                                                  strict=True)]
        counters = [a.probes.kernel_counters() for a in (base, alt)]
    finally:
        for ring in rings:
            ring.close()
        for a in (base, alt):
            a.probes.close()
    for c in counters:
        assert c["rb_drops"] == 0 and c["unparsed"] == 0, counters
    want, have = got
    tcp = [k for k in want if k[0][0] == "tcp"]
    assert len(tcp) >= 130 and any(k[0][0] == "udp" for k in want), len(want)
    assert set(have) == set(want)                       # the same sampled bytes ...
    for key, hits in want.items():                      # ... at the same points, device,
        assert [h[:5] for h in have[key]] == [h[:5] for h in hits], key   # netns and CPU
        # in the same invocations: both programs run back to back on the one CPU, unless
        # the hypervisor takes that CPU between them (ci36, heavy steal time: 2.4 ms)
        for a, b in zip(hits, have[key], strict=True):
            assert abs(a[5] - b[5]) < 5_000_000, (key, a, b)
    full = {"sock_send", "dev_queue", "dev_xmit", "dev_rx", "tcp_rx", "sock_recv"}
    complete = [k for k in tcp if full <= {h[0] for h in have[k]}]
    assert len(complete) >= 0.95 * len(tcp), (len(complete), len(tcp))
    for k in complete:                                  # sane: both veths and the bridge
        devs = {(h[0], h[1]) for h in have[k] if h[0] in DEVICE_RAW}
        assert {p for p, _ in devs} == set(DEVICE_RAW) and len({d for _, d in devs}) >= 3, devs
        ts = {h[0]: h[5] for h in have[k]}
        assert ts["sock_send"] <= ts["dev_queue"] <= ts["dev_rx"] <= ts["tcp_rx"] \
            <= ts["sock_recv"], ts


@pytest.mark.parametrize(("opt_in", "skip", "send", "recv", "udp_reads"), [
    (True, (), "tp_btf/tcp_sendmsg_locked+tp_btf/sys_enter+tp_btf/sock_send_length",
     "tp_btf/sys_enter+tp_btf/sk_data_ready+tp_btf/sock_recv_length", True),
    (True, ("tp_btf/sk_data_ready", "raw_tp/sk_data_ready"),
     "tp_btf/tcp_sendmsg_locked+tp_btf/sys_enter+tp_btf/sock_send_length",
     "tp_btf/sys_enter+tp_btf/sock_recv_length", True),
    (True, ("tp_btf/sys_enter", "raw_tp/sys_enter"),
     "tp_btf/tcp_sendmsg_locked+tp_btf/sock_send_length", "tp_btf/sock_recv_length", False),
    # the default: UDP's socket points not asked for, so no sys_enter program runs
    (False, (), "tp_btf/tcp_sendmsg_locked+tp_btf/sock_send_length", "tp_btf/sock_recv_length",
     False)])
def test_a_kernel_without_udps_hooks_keeps_tcps_socket_points(
        net: Any, opt_in: bool, skip: tuple[str, ...], send: str, recv: str,
        udp_reads: bool) -> None:
    """The socket points' UDP parts (sys_enter, sk_data_ready) forced off, as on a kernel
    without those tracepoints, or not asked for: TCP's socket points are still served, by
    the candidates without them, and the grouper is told whether UDP reads are reported."""
    a = _agent(net, skip, opt_in)
    try:
        a.probes.load()
        a.probes.attach()
        assert a.probes.attached["sock_send"] == send
        assert a.probes.attached["sock_recv"] == recv
        assert a.probes.udp_reads is udp_reads
    finally:
        a.probes.close()


def test_doctor_reports_the_fallback_and_why() -> None:
    tokens = [t for h in DEVICE_RAW for t in ("--skip-hook", BY_NAME[h].hooks[0].name)]
    r = subprocess.run([*LATSCOPE, "doctor", "--json", *tokens], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    points = json.loads(r.stdout)["points"]
    for point, raw in DEVICE_RAW.items():
        tp = BY_NAME[point].hooks[0].name
        e = points[point]
        assert e["available"] is True and e["hook"] == raw, e
        assert e["skipped"] == [{"hook": tp, "reason": f"forced off (--skip-hook {tp})"}]
        # the candidates after it were tried too, each with the kernel's answer
        assert [f["hook"] for f in e["fallbacks"]] == [h.name for h in BY_NAME[point].hooks[2:]]
        assert all(f["available"] or f["reason"] for f in e["fallbacks"]), e
    # untouched points keep their preferred hook, with nothing skipped
    assert points["tcp_rx"]["hook"] == "tp_btf/tcp_probe" and points["tcp_rx"]["skipped"] == []

    r = subprocess.run([*LATSCOPE, "doctor", "--json", "--skip-hook", "tp_btf"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    for point, raw in RAW.items():
        assert rep["points"][point]["hook"] == raw
        assert rep["points"][point]["skipped"][0]["reason"] == "forced off (--skip-hook tp_btf)"
    assert rep["extra"]["retransmit"]["hook"] == RETRANS_HOOKS[1].name


def test_agent_skip_hook_option(scratch_netns: str, tmp_path: Path) -> None:
    """--skip-hook reaches the agent's walk (its status names the fallback); an unknown
    token is an error before anything is attached."""
    bad = subprocess.run([*LATSCOPE, "agent", "--host", "lsxa-solo", "--skip-hook", "tp_bft"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--skip-hook: tp_bft names no hook" in bad.stderr
    status = tmp_path / "status.json"
    r = subprocess.run(
        [*LATSCOPE, "agent", "--host", "lsxa-solo", "--netns", scratch_netns,
         "--bootstrap", "127.0.0.1:1", "--topic", "lsx-test-skip-hook", "--duration", "0.5",
         "--points", ",".join(DEVICE_RAW), "--skip-hook", "tp_btf/net_dev_start_xmit",
         "--status-file", str(status)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = json.loads(status.read_text())
    assert st["points"] == {"dev_queue": "tp_btf/net_dev_queue",
                            "dev_xmit": "raw_tp/net_dev_start_xmit",
                            "dev_rx": "tp_btf/netif_receive_skb"}, st["points"]
    assert st["skipped"] == {"dev_xmit": [{"hook": "tp_btf/net_dev_start_xmit", "reason":
                                           "forced off (--skip-hook tp_btf/net_dev_start_xmit)"}]}
    assert st["settings"]["skip_hooks"] == ["tp_btf/net_dev_start_xmit"]
