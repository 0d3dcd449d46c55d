"""A private Kafka broker (its own run directory and free ports) for tests that stop the
broker: the suite's shared broker on 9092 is never stopped. Started with the stack's own
code (stack/kafka.py), stopped by its PID (the stack's pid file)."""

from __future__ import annotations

import contextlib
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from needs import missing

from latscope.stack.kafka import LocalKafka
from latscope.stack.services import StackSettings


def listen_ports(n: int) -> int:
    """A port p with p..p+n-1 free, below the kernel's ephemeral range: a port from that
    range (what binding port 0 gives) may become some client's local port while the broker
    is stopped, and the restart then fails with "Address already in use"."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(20000, low - n)
        try:
            for q in range(port, port + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        return port
    raise RuntimeError("no free listening ports below the ephemeral range")


@contextlib.contextmanager
def private_kafka(prefix: str) -> Iterator[LocalKafka]:
    """A plain single-node broker under a temp dir named ``prefix``…; stopped and removed
    on exit, whatever happened."""
    settings = StackSettings.from_env()
    if not settings.kafka().provisioned():
        missing("Kafka jars not provisioned: run `make setup`")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        port = listen_ports(2)   # the broker and its controller
        broker = LocalKafka(settings.cache, Path(tmp) / "run", settings.kafka_version, port,
                            port + 1)
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()
