"""The CPU budget on the real kernel and broker: two agents with a budget of records/s and
dense sampling, traffic that would make far more. The truths: iperf3's own bitrates (from
which the level each host needs is worked out here by hand), the records' sequence numbers
(which stride took them), and the broker's arrival times (how many per second).

h1 ==veth== h2 --br0-- c1: flow A h1 -> c1 crosses both agents' hosts; flow B h2 -> c1 only
h2's. h2 needs a higher level than h1; both must sample at it (the fleet's level), or
flow A's bytes taken by h1 would be missing on h2."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest
from producer_helpers import consume, loopback_burst, running_agents, wall_clock

from latscope.bpf.netns import entered
from latscope.kafka import KafkaSettings, ensure_topics, producer
from latscope.producers.agent import AgentSettings
from latscope.schemas import codec
from latscope.schemas.records import TOPIC_STRIDE, TOPICS, stride_topic

pytestmark = [pytest.mark.root, pytest.mark.stack]

SIZE = 1448              # every MSS: dense, so the budget must act
BUDGET = 400             # records/s per host
SECONDS = 14
RATES = {5301: ("h1", "100M"), 5302: ("h2", "400M")}   # port: (client host, iperf3 -b)
SIOCOUTQNSD = 0x894B     # linux/sockios.h: bytes in a TCP socket's send queue not yet sent


def _iperf(net: Any, port: int, src: str, rate: str) -> subprocess.Popen:
    return net.popen(src, ["iperf3", "-c", "10.2.0.2", "-p", str(port), "-t", str(SECONDS),
                           "-b", rate, "-J"], stdout=subprocess.PIPE, text=True)


def test_budget_raises_one_level_for_every_host(net: Any, stack: Any, topic_name: str) -> None:
    servers = [net.popen("c1", ["iperf3", "-s", "-1", "-p", str(p), "-B", "10.2.0.2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in RATES]
    switched: dict[str, float] = {}
    with running_agents({host: AgentSettings(
            host=host, netns=[net.ns_name(h) for h in hosts], clock=net.clock(host),
            sample_size=SIZE, ports=list(RATES), topic=topic_name, flow_stats=False,
            budget_records_per_s=BUDGET,    # demands on <topic>.stride: this test's own
            kafka=KafkaSettings(stack.kafka_bootstrap))
            for host, hosts in {"h1": ["h1"], "h2": ["h2", "c1"]}.items()}) as ag:
        for p, srv in zip(RATES, servers, strict=True):
            net.wait_listening("c1", p, srv)
        clients = {p: _iperf(net, p, src, rate) for p, (src, rate) in RATES.items()}
        stop = threading.Event()

        def watch() -> None:      # when each agent switched to its final level
            last = {h: 0 for h in ag}
            while not stop.wait(0.05):
                for h, a in ag.items():
                    lvl = a.stride.level if a.stride else 0
                    if lvl != last[h]:
                        last[h], switched[h] = lvl, time.time()
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        reports = {p: json.loads(c.communicate(timeout=SECONDS + 30)[0])
                   for p, c in clients.items()}
        traffic_end = time.time()
        stop.set()
        w.join()
        time.sleep(1.5)            # the last records out of the hold
        status = {h: a.status()["stride"] for h, a in ag.items()}
    for s in servers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.wait(10)
    # The level each host needs, from iperf3's own figures: records/s at level 0 are the
    # sampled bytes per second its agent sees (one record per byte and host), halved per level.
    per_s = {p: r["end"]["sum_sent"]["bits_per_second"] / 8 / SIZE for p, r in reports.items()}
    sees = {"h1": per_s[5301], "h2": per_s[5301] + per_s[5302]}
    need = {h: math.ceil(math.log2(n / BUDGET)) for h, n in sees.items()}
    assert need["h1"] < need["h2"], (need, per_s)    # as planned: h2 holds the fleet
    level = need["h2"]
    for h in ("h1", "h2"):
        st = status[h]
        assert st["demand"] == need[h], (h, st, need)
        assert st["level"] == level and st["bytes"] == SIZE << level, (h, st, level)
        assert st["hosts"] == need and st["rejected"] == 0 and st["failed"] == 0, st
    # one switch, the same instant on both (the demand's effective time; seen by a 50 ms
    # watcher of a 0.5 s tick)
    assert abs(switched["h1"] - switched["h2"]) < 0.7, switched
    t_switch = max(switched.values())
    recs = [r for r in consume(topic_name, stack.kafka_bootstrap, 10**9, timeout=15)
            if not r["retrans"]]
    # after the switch (and its hold): only bytes of the new stride, the same on both hosts
    late = [r for r in recs if r["arrival_ms"] / 1e3 > t_switch + 2.0]
    h1_late = {r["seq"] for r in late if r["host"] == "h1" and r["flow"]["dport"] == 5301}
    off = [r for r in late if r["seq"] % (SIZE << level)]
    assert not off, (Counter(r["seq"] % (SIZE << level) for r in late).most_common(3), [
        (r["host"], r["flow"]["dport"], r["complete"], [h["point"] for h in r["hits"]],
         r["arrival_ms"] / 1e3 - t_switch) for r in off[:3]])
    # flow A: every byte h1 sampled is on h2 (whenever h2's record arrived), apart from the
    # last ones still on their way when the agents stopped
    on_h2 = {r["seq"] for r in recs if r["host"] == "h2" and r["flow"]["dport"] == 5301}
    gone = h1_late - on_h2
    assert len(h1_late) >= 40 and len(gone) <= 2, (len(h1_late), sorted(gone))
    # at most the budget: h2's records per second of their first hit (when the byte was
    # sampled; they arrive in their partition's messages, about one a second, so a second of
    # arrivals may hold none or two), over whole seconds while the traffic ran (a loaded
    # machine switches later: ci36 had 3 seconds after the traffic)
    t0 = math.ceil(t_switch + 2.0)
    wall = wall_clock(net, "h2")
    per_sec = Counter(int(wall(r["hits"][0]["ts_ns"]) / 1e9) for r in recs if r["host"] == "h2")
    whole = [per_sec[t] for t in range(t0, min(t0 + 6, int(traffic_end) - 1))]
    assert len(whole) >= 3, (t_switch, traffic_end)
    print(f"needs {need} level {level} sampled/s {per_s} switched {switched} "
          f"h2 records/s {whole} flow A bytes {len(h1_late)}")
    assert max(whole) <= BUDGET * 1.1 and min(whole) > 0, whole


def test_an_agent_starts_at_the_fleet_level(scratch_netns: str, stack: Any,
                                            topic_name: str) -> None:
    """Another host's demand (written here by hand) holds the fleet at level 3: an agent
    started now takes its very first bytes at size << 3. Reading the level on the stride
    thread after the probes attached cost a second of level-0 records per restart."""
    level, now = 3, time.time_ns()
    topic = stride_topic(topic_name)
    ensure_topics(stack.kafka_bootstrap, {topic: TOPICS[TOPIC_STRIDE]})
    p = producer(stack.kafka_bootstrap)
    p.produce(topic, codec.default_codec().encode("StrideDemand", {
        "schema_version": 1, "host": "lsxfleet", "level": level,
        "effective_ns": now - 10**9, "sent_ns": now, "rate": 9000.0, "budget": 1000}),
        key=b"lsxfleet")
    assert p.flush(10) == 0
    with running_agents({"h1": AgentSettings(
            host="h1", netns=[scratch_netns], sample_size=SIZE, topic=topic_name,
            flow_stats=False, budget_records_per_s=10**6,
            kafka=KafkaSettings(stack.kafka_bootstrap))}) as ag:
        assert loopback_burst(scratch_netns, 20_000_000) == 20_000_000
        time.sleep(1.5)            # the records out of the hold
        st = ag["h1"].status()["stride"]
    assert st["level"] == level and st["bytes"] == SIZE << level and st["changes"] == 1, st
    recs = [r for r in consume(topic_name, stack.kafka_bootstrap, 10**9, timeout=10)
            if not r["retrans"]]
    # one record per sampled byte of the 20 MB (one host: 1727), each on the fleet's
    # stride; a few may be missing (ci46: 1716, a loaded machine); level 0 would be 8x
    wrong = Counter(r["seq"] % (SIZE << level) for r in recs if r["seq"] % (SIZE << level))
    sampled = 20_000_000 / (SIZE << level)
    # a failure names the causes of a record too many: a second flow, a byte in two records
    assert 0.97 * sampled <= len(recs) <= sampled + 1 and not wrong, (
        len(recs), wrong.most_common(3), Counter(r["flow_id"] for r in recs),
        [k for k, n in Counter((r["flow_id"], r["seq"]) for r in recs).items() if n > 1][:3])


def test_bytes_left_in_their_socket_come_out_when_the_stride_rises(
        scratch_netns: str, stack: Any, topic_name: str) -> None:
    """A receiver that does not read: the sender's last bytes stay in its socket, unsent,
    with their sock_send hit only. A coarser stride leaves those off it without any further
    hit, so their records come out at the switch, incomplete and counted; they waited a
    minute (queued_ns), or for the agent's stop (the budget test's level-0 record 2 s after
    the switch: project CI on 358232f). The truth: the kernel's count of unsent bytes."""
    level = 3
    with contextlib.ExitStack() as close:
        with entered(scratch_netns):
            srv = close.enter_context(socket.socket())
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)   # inherited: small window
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            cli = close.enter_context(socket.socket())
        ag = close.enter_context(running_agents({"h1": AgentSettings(
            host="h1", netns=[scratch_netns], sample_size=SIZE, topic=topic_name,
            flow_stats=False, kafka=KafkaSettings(stack.kafka_bootstrap))}))
        cli.connect(srv.getsockname())
        close.enter_context(srv.accept()[0])          # never read
        cli.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                cli.send(b"q" * (1 << 16))
        time.sleep(1.5)                 # what did leave: read or given up by the hold
        unsent = struct.unpack("i", fcntl.ioctl(cli, SIOCOUTQNSD, b"\0" * 4))[0]
        t_switch = time.time()
        ag["h1"].set_stride_level(level)        # as the stride thread does
        time.sleep(1.0)
        recs = consume(topic_name, stack.kafka_bootstrap, 10**9, timeout=8)   # still running
        st = ag["h1"].status()
        assert struct.unpack("i", fcntl.ioctl(cli, SIOCOUTQNSD, b"\0" * 4))[0] == unsent
    stride = SIZE << level
    only_send = [r for r in recs if {h["point"] for h in r["hits"]} == {"sock_send"}]
    left = sorted(r["seq"] for r in only_send)
    # the sampled bytes of `unsent` bytes, less those of the coarser stride, by hand
    lo, hi = unsent // SIZE - -(-unsent // stride), -(-unsent // SIZE) - unsent // stride
    print(f"unsent {unsent} B; records of bytes left in the socket {len(left)} "
          f"(expected {lo}..{hi}); restrided {st['counters']['restrided']}")
    assert unsent > 20 * stride, unsent
    assert lo <= len(left) <= hi, (len(left), lo, hi, unsent)
    assert all(s % SIZE == 0 and s % stride for s in left), left[:5]
    assert st["counters"]["restrided"] == len(left), st["counters"]
    arrived = [r["arrival_ms"] / 1e3 - t_switch for r in only_send]
    assert 0 <= min(arrived) and max(arrived) < 1.0, (min(arrived), max(arrived))
    assert not any(r["complete"] for r in recs if r["seq"] in left)
