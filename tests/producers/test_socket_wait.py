"""Socket-wait causes (issue #15), each injected on purpose on a real kernel, read back from
the records the agents publish to the real Kafka. h1 --r-- h2: r forwards, and its tbf toward
h2 is the congested router; one agent on h1 (the sender), one on h2 (the receiver).

A cause's share is time-weighted over the flow's sampled bytes that carry causes (their
socket may track one byte at a time): sum of the cause's µs over sum of the segment's
duration (sender: sock_send -> tcp_tx; receiver: tcp_rx -> sock_recv), both on one host's
clock."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from producer_helpers import consume, running_agents, tbf

from latscope.kafka import KafkaSettings
from latscope.lab import netns
from latscope.lab.topology import parse_topology
from latscope.producers.agent import Agent, AgentSettings
from latscope.schemas import codec
from latscope.stream.breakdown_avro import encode_breakdown
from latscope.stream.segments import ClockView, breakdown

pytestmark = [pytest.mark.root, pytest.mark.stack]

PREFIX = "lsxw" + os.environ["LSX_RUN_ID"]
PORT, BULK_PORT = 5441, 5442
TOPO = {
    "hosts": [{"name": "h1", "role": "manager"}, {"name": "r", "role": "host"},
              {"name": "h2", "role": "host"}],
    "links": [{"a": "h1", "b": "r", "a_addr": ["10.41.1.1/24"], "b_addr": ["10.41.1.2/24"]},
              {"a": "r", "b": "h2", "a_addr": ["10.41.2.1/24"], "b_addr": ["10.41.2.2/24"]}],
    "routes": [{"host": "h1", "dst": "10.41.2.0/24", "via": "10.41.1.2"},
               {"host": "h2", "dst": "10.41.1.0/24", "via": "10.41.2.1"}],
}
DST = "10.41.2.2"
SO_MAX_PACING_RATE = 47
# The hosts' default congestion control may be BBR, which paces itself: each flow here picks
# the one whose cause it injects (CUBIC does not pace unless asked).
CUBIC = (socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")


@pytest.fixture(scope="module")
def net() -> Iterator[Any]:
    netns.teardown(PREFIX, ["h1", "r", "h2"])
    with netns.build(parse_topology(TOPO, "socket-wait-test"), prefix=PREFIX) as n:
        n.wait_all_reachable()
        yield n


@contextlib.contextmanager
def agents(net: Any, topic: str, bootstrap: str, size: int) -> Iterator[dict[str, Agent]]:
    with running_agents({host: AgentSettings(
            host=host, netns=[net.ns_name(host)], clock=net.clock(host), sample_size=size,
            topic=topic, ports=[PORT], flow_stats=False, kafka=KafkaSettings(bootstrap))
            for host in ("h1", "h2")}) as run:
        yield run


def router_tbf(net: Any, *args: str) -> contextlib.AbstractContextManager[None]:
    """A tbf on r's device toward h2: the congested router."""
    return tbf(net, "r", *args, dev=net.ifname("r", 1))


class Pair:
    """A connection h1 -> h2:port; the receiver reads with `read` (a callable on the
    accepted socket) on a thread of its own."""

    def __init__(self, net: Any, port: int, read: Any, rcvbuf: int = 0,
                 opts: tuple[tuple[int, int, int], ...] = ()) -> None:
        with net.enter("h2"):
            self.srv = socket.socket()
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if rcvbuf:
                self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.srv.bind((DST, port))
            self.srv.listen(1)
        with net.enter("h1"):
            self.cli = socket.socket()
        for o in (CUBIC, *opts):
            self.cli.setsockopt(*o)
        self.got = 0
        self.t = threading.Thread(target=self._serve, args=(read,), daemon=True)
        self.t.start()
        self.cli.connect((DST, port))
        self.sport = self.cli.getsockname()[1]

    def _serve(self, read: Any) -> None:
        conn, _ = self.srv.accept()
        with conn:
            while True:
                n = read(conn)
                if not n:
                    break
                self.got += n

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.cli.shutdown(socket.SHUT_WR)
        self.t.join(30)
        self.cli.close()
        self.srv.close()


def fast_read(conn: socket.socket) -> int:
    return len(conn.recv(1 << 16))


def slow_read(conn: socket.socket) -> int:
    time.sleep(0.01)
    return len(conn.recv(4096))


def send_for(sock: socket.socket, seconds: float, chunk: int, gap_s: float = 0.0) -> None:
    data, end = b"\x5a" * chunk, time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendall(data)
        if gap_s:
            time.sleep(gap_s)


def records(topic: str, bootstrap: str, sport: int, host: str, quiet_s: float = 3.0
            ) -> list[dict]:
    time.sleep(quiet_s)       # past the agents' linger and hold
    recs = consume(topic, bootstrap, 1 << 30, timeout=8.0)
    return [r for r in recs if r["host"] == host and r["flow"]["sport"] == sport
            and r["flow"]["dport"] == PORT and not r["retrans"]]


def segment(rec: dict, a: str, b: str) -> tuple[int, dict | None] | None:
    """(duration ns, the later hit's wait) of the segment a -> b in one record."""
    hits = {h["point"]: h for h in rec["hits"]}
    if a not in hits or b not in hits:
        return None
    return hits[b]["ts_ns"] - hits[a]["ts_ns"], hits[b]["wait"]


def shares(recs: list[dict], a: str, b: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Each cause's share of the segment's time over the bytes that carry causes, and
    figures: bytes with the segment, with causes, their total time."""
    segs = [s for s in (segment(r, a, b) for r in recs) if s is not None]
    carried = [(d, w) for d, w in segs if w is not None]
    total = sum(d for d, _ in carried)
    out: dict[str, float] = {}
    for _d, w in carried:
        for k, v in w.items():
            out[k] = out.get(k, 0.0) + v * 1000
    figures = {"bytes": len(segs), "with_causes": len(carried), "time_ms": total / 1e6,
               "all_time_ms": sum(d for d, _ in segs) / 1e6}
    return {k.removesuffix("_us"): v / total for k, v in out.items()} if total else {}, figures


def show(what: str, sh: dict[str, float], fig: dict[str, Any]) -> None:
    print(f"{what}: {fig} " + " ".join(f"{k}={v:.3f}" for k, v in sorted(sh.items()) if v))


# ---- the four causes -----------------------------------------------------------------------

def nagle_run(net: Any, topic: str, bootstrap: str, nodelay: bool) -> tuple[dict, dict]:
    """Small writes (100 B every 4 ms) behind r's congested tbf (a bulk flow fills it)."""
    opts = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),) if nodelay else ()
    with router_tbf(net, "rate", "20mbit", "burst", "20k", "limit", "200k"), \
            agents(net, topic, bootstrap, size=512):
        bulk = Pair(net, BULK_PORT, fast_read)
        small = Pair(net, PORT, fast_read, opts=opts)
        tb = threading.Thread(target=send_for, args=(bulk.cli, 6.0, 1 << 16), daemon=True)
        tb.start()
        time.sleep(1.0)          # the router's queue fills
        send_for(small.cli, 4.0, 100, gap_s=0.004)
        tb.join()
        small.close()
        bulk.close()
        recs = records(topic, bootstrap, small.sport, "h1")
    return shares(recs, "sock_send", "tcp_tx")


def test_nagle_small_writes_behind_a_congested_router(net: Any, stack: Any,
                                                       topic_name: str) -> None:
    sh, fig = nagle_run(net, topic_name, stack.kafka_bootstrap, nodelay=False)
    show("nagle", sh, fig)
    assert fig["with_causes"] >= 10, fig
    assert sh.get("nagle", 0) >= 0.8, (sh, fig)


def test_nagle_off_with_tcp_nodelay(net: Any, stack: Any, topic_name: str) -> None:
    sh, fig = nagle_run(net, topic_name, stack.kafka_bootstrap, nodelay=True)
    show("nodelay", sh, fig)
    assert fig["bytes"] >= 10, fig
    # every byte's sender socket time counts; a byte sent inside its send call carries none
    nagle_ms = sh.get("nagle", 0) * fig["time_ms"]
    assert nagle_ms <= 0.05 * max(fig["all_time_ms"], 1e-9) + 0.1, (sh, fig)


def sender_shares(net: Any, topic: str, bootstrap: str, what: str, size: int,
                  opts: tuple = (), seconds: float = 4.0,
                  around: contextlib.AbstractContextManager | None = None
                  ) -> tuple[dict, dict]:
    """A bulk sender (16 KB writes, a fast reader) for `seconds`, inside `around`: the
    cause shares of h1's socket segments, at least 10 bytes carrying causes."""
    with around or contextlib.nullcontext(), agents(net, topic, bootstrap, size=size):
        p = Pair(net, PORT, fast_read, opts=opts)
        send_for(p.cli, seconds, 16384)
        p.close()
        recs = records(topic, bootstrap, p.sport, "h1")
    sh, fig = shares(recs, "sock_send", "tcp_tx")
    show(what, sh, fig)
    assert fig["with_causes"] >= 10, fig
    return sh, fig


def test_cwnd_limited_bulk_through_a_tbf(net: Any, stack: Any, topic_name: str) -> None:
    sh, fig = sender_shares(net, topic_name, stack.kafka_bootstrap, "cwnd", 1 << 16,
                            seconds=5.0, around=router_tbf(net, "rate", "20mbit", "burst",
                                                           "20k", "limit", "150k"))
    assert sh.get("cwnd", 0) >= 0.8, (sh, fig)


def test_slow_reader(net: Any, stack: Any, topic_name: str) -> None:
    with agents(net, topic_name, stack.kafka_bootstrap, size=1 << 14):
        p = Pair(net, PORT, slow_read, rcvbuf=65536,
                 opts=((socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 15),))
        send_for(p.cli, 4.0, 16384)
        sport = p.sport
        p.close()
        rx = records(topic_name, stack.kafka_bootstrap, sport, "h2", quiet_s=1.0)
        tx = records(topic_name, stack.kafka_bootstrap, sport, "h1", quiet_s=0.0)
    rsh, rfig = shares(rx, "tcp_rx", "sock_recv")
    tsh, tfig = shares(tx, "sock_send", "tcp_tx")
    show("slow reader, receiver", rsh, rfig)
    show("slow reader, sender", tsh, tfig)
    assert rfig["with_causes"] >= 10, rfig
    assert rsh.get("unread", 0) >= 0.9, (rsh, rfig)
    assert tfig["with_causes"] >= 10, tfig
    assert tsh.get("rwnd", 0) >= 0.8, (tsh, tfig)
    # through the worker's breakdown: both hosts' records of a byte joined, its socket
    # segments carry the causes their hits carried, as the worker writes and reads them
    tx_of, joined = {r["seq"]: r for r in tx}, 0
    for r in rx:
        if r["seq"] not in tx_of:
            continue
        recs = [tx_of[r["seq"]], r]
        bd = codec.decode(encode_breakdown(breakdown(recs, ClockView({}, "h1"),
                                                     path=["h1", "h2"])))[1]
        waits = {h["point"]: h["wait"] for rec in recs for h in rec["hits"] if h["wait"]}
        got = {s["to"].split(":")[1]: s["wait"] for s in bd["segments"] if s["wait"]}
        assert got == waits, (got, waits)
        assert all(s["layer"] == "socket" for s in bd["segments"] if s["wait"])
        joined += bool(waits)
    assert joined >= 5, joined


def test_pacing(net: Any, stack: Any, topic_name: str) -> None:
    rate = 4_000_000 // 8          # 4 Mbit/s
    sh, fig = sender_shares(net, topic_name, stack.kafka_bootstrap, "pacing", 1 << 14,
                            opts=((socket.SOL_SOCKET, SO_MAX_PACING_RATE, rate),
                                  (socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 15)))
    assert sh.get("pacing", 0) >= 0.8, (sh, fig)


# ---- the send call's entry time --------------------------------------------------------------

def test_a_write_blocked_on_its_send_buffer_is_timed_from_its_entry(
        net: Any, stack: Any, topic_name: str) -> None:
    """One 512 KB write into a 32 KB send buffer behind a 20 Mbit/s router: TCP copies it in
    many chunks (the entry tracepoint fires for each) and sends most of it while the call
    waits for space. Every sampled byte of the call is stamped at sock_send with the call's
    entry, so the latest one's sock_send -> tcp_tx spans the call as the test timed it, and
    none is sent before it was handed over."""
    size = 1 << 19
    with router_tbf(net, "rate", "20mbit", "burst", "20k", "limit", "150k"), \
            agents(net, topic_name, stack.kafka_bootstrap, size=1 << 14):
        p = Pair(net, PORT, fast_read, opts=((socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 15),))
        t0 = time.monotonic()
        p.cli.sendall(b"\x5a" * size)
        call_s = time.monotonic() - t0
        p.close()
        recs = records(topic_name, stack.kafka_bootstrap, p.sport, "h1")
    entries = {h["ts_ns"] for r in recs for h in r["hits"] if h["point"] == "sock_send"}
    spans = [s[0] for s in (segment(r, "sock_send", "tcp_tx") for r in recs) if s]
    print(f"call {1e3 * call_s:.0f} ms; {len(spans)} bytes, sock_send stamps {len(entries)}, "
          f"sock_send -> tcp_tx {min(spans) / 1e6:.1f} .. {max(spans) / 1e6:.1f} ms")
    assert call_s >= 0.1, call_s               # the call did wait for space
    assert len(spans) >= 16, len(spans)        # 32 sampled bytes in the call
    assert len(entries) == 1, sorted(entries)  # one call, one entry time
    assert min(spans) > 0
    assert max(spans) >= 0.9 * call_s * 1e9, (max(spans) / 1e9, call_s)
