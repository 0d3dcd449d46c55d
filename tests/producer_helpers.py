"""Helpers of the producer tests: traffic between namespaces (a TCP transfer, optionally with
a slow reader, and UDP datagrams; sockets are created inside the namespace, which they
keep, then driven from ordinary threads) and the BPF links a process holds."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from latscope.bpf import libbpf
from latscope.kafka import partition_of
from latscope.lab.netns import Net
from latscope.producers.agent import Agent, AgentSettings
from latscope.schemas import codec

PREFIX = "lsxa" + os.environ["LSX_RUN_ID"]   # the module network's namespaces and veths


@dataclass
class Transfer:
    sport: int
    received: int
    retrans: int = 0       # the sender's TCP_INFO tcpi_total_retrans: segments it sent again


def total_retrans(sock: socket.socket) -> int:
    """tcpi_total_retrans of a TCP socket: the kernel's own count of retransmitted segments
    (struct tcp_info: 100 bytes of fields before it, unchanged since 2.6)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[100:104], "little")


def true_ns(net: Net, host: str, ts: int) -> int:
    """A host's timestamp on the reference clock (undoing its injected offset and drift)."""
    return ts - net.clock(host).true_offset(ts)


def wall_clock(net: Net, host: str) -> Callable[[int], int]:
    """A host's probe timestamps -> the wall clock (the broker's append times are on it),
    through one reading of the wall clock against the monotonic one."""
    wall = time.time_ns() - time.monotonic_ns()
    return lambda ts: true_ns(net, host, ts) + wall


def tcp_transfer(net: Net, src: str, dst: str, dst_addr: str, port: int, nbytes: int,
                 reader_delay_ms: int = 0, read_size: int = 1 << 16,
                 timeout: float = 60.0, write_size: int = 0, write_gap_ms: int = 0) -> Transfer:
    """nbytes from src to dst_addr in dst: one sendall, or write_size bytes at a time with
    write_gap_ms between writes (a paced sender)."""
    fam = socket.AF_INET6 if ":" in dst_addr else socket.AF_INET
    with net.enter(dst):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((dst_addr, port))
        srv.listen(1)
    with net.enter(src):
        cli = socket.socket(fam, socket.SOCK_STREAM)
    got = [0]

    def reader() -> None:
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(read_size)
                if not data:
                    break
                got[0] += len(data)
                if reader_delay_ms:
                    time.sleep(reader_delay_ms / 1000)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        cli.settimeout(timeout)
        cli.connect((dst_addr, port))
        sport = cli.getsockname()[1]
        step = write_size or nbytes
        for off in range(0, nbytes, step):
            cli.sendall(b"\x5a" * min(step, nbytes - off))
            if write_gap_ms and off + step < nbytes:
                time.sleep(write_gap_ms / 1000)
        cli.shutdown(socket.SHUT_WR)
        t.join(timeout)
        retrans = total_retrans(cli)
    finally:
        cli.close()
        srv.close()
    return Transfer(sport, got[0], retrans)


def udp_send(net: Net, src: str, dst: str, dst_addr: str, port: int, count: int,
             size: int = 1000) -> int:
    """Send count distinct datagrams; returns the sender's port."""
    fam = socket.AF_INET6 if ":" in dst_addr else socket.AF_INET
    with net.enter(dst):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind((dst_addr, port))
    with net.enter(src):
        tx = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        tx.connect((dst_addr, port))
        for i in range(count):
            tx.send(i.to_bytes(8, "big") * (size // 8))
            if i % 64 == 63:
                time.sleep(0.001)      # pace, so the receiver's queue never overflows
        return tx.getsockname()[1]
    finally:
        tx.close()
        rx.close()


def loopback_burst(ns: str, nbytes: int, port: int = 0) -> int:
    """A TCP transfer over 127.0.0.1 inside namespace ns; returns the bytes received."""
    from latscope.bpf.netns import entered
    with entered(ns):
        srv = socket.create_server(("127.0.0.1", port))
        cli = socket.socket()
    got = 0
    try:
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
        with conn:
            sender = threading.Thread(target=cli.sendall, args=(b"y" * nbytes,), daemon=True)
            sender.start()
            while got < nbytes:
                got += len(conn.recv(1 << 16))
            sender.join(10)
    finally:
        cli.close()
        srv.close()
    return got


def start_agent_process(*args: str, ready: str = "ready") -> subprocess.Popen:
    """``latscope agent ARGS`` as a process, returned once its first line says ``ready``
    (every probe attached); its stderr is the failure's message otherwise."""
    proc = subprocess.Popen([sys.executable, "-m", "latscope", "agent", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise AssertionError(f"agent not {ready!r}: {line}{proc.communicate()[1]}")
    return proc


@contextlib.contextmanager
def agent_process(*args: str, ready: str = "ready") -> Iterator[subprocess.Popen]:
    """``start_agent_process``, killed on the way out if the test left it running."""
    proc = start_agent_process(*args, ready=ready)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_agents(settings: dict[str, AgentSettings]) -> Iterator[dict[str, Agent]]:
    """One in-process agent per host, each on a thread of its own; stopped (the thread
    joined, the probes closed) on exit, whatever happened."""
    run: dict[str, tuple[Agent, threading.Event, threading.Thread]] = {}
    try:
        for host, s in settings.items():
            a = Agent(s)
            a.start()
            stop = threading.Event()
            t = threading.Thread(target=a.run, args=(stop,), daemon=True)
            t.start()
            run[host] = (a, stop, t)
        yield {h: a for h, (a, _, _) in run.items()}
    finally:
        for a, stop, t in run.values():
            stop.set()
            t.join(30)
            assert not t.is_alive()
            a.probes.close()


def links_of(pid: int) -> set[int]:
    """IDs of the BPF links a process holds: other engineers' agents may attach and detach
    links at the same time, so tests count only their own."""
    return libbpf.held_ids(pid, "link_id")


def read_topic(topic: str, bootstrap: str, want: int, take: Callable[[Any, int], list[dict]],
               timeout: float = 30.0) -> list[dict]:
    """Up to ``want`` records of ``topic`` from its start: ``take(message, partitions)``
    turns each message into its records (and checks it)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        while len(out) < want and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if not m.error():
                    out += take(m, n)
        return out
    finally:
        c.close()


def consume(topic: str, bootstrap: str, want: int, timeout: float = 30.0) -> list[dict]:
    """Up to ``want`` LayerEvent records of ``topic``, each with its broker append time
    (``arrival_ms``); every one in its flow's partition."""
    def take(m: Any, n: int) -> list[dict]:
        name, batch = codec.decode(m.value())
        assert name == "LayerEventBatch" and batch["events"]
        for rec in batch["events"]:
            assert partition_of(rec["flow_id"].encode(), n) == m.partition()
            rec["arrival_ms"] = m.timestamp()[1]    # the broker's append time
        return batch["events"]
    return read_topic(topic, bootstrap, want, take, timeout)


@contextlib.contextmanager
def tbf(net: Any, host: str, *args: str, dev: str | None = None) -> Iterator[None]:
    """A tbf qdisc (``args``) on ``dev`` (the host's first device) for the block."""
    ns, dev = net.ns_name(host), dev or net.ifname(host, 0)
    subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", *args],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)
