"""A private Kafka broker (its own run directory and free ports) for tests that stop the
broker: the suite's shared broker on 9092 is never stopped. Started with the stack's own
code (stack/kafka.py), stopped by its PID (the stack's pid file)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from needs import missing

from latscope.procs import free_port_pair
from latscope.stack.kafka import LocalKafka
from latscope.stack.services import StackSettings


@contextlib.contextmanager
def private_kafka(prefix: str) -> Iterator[LocalKafka]:
    """A plain single-node broker under a temp dir named ``prefix``…; stopped and removed
    on exit, whatever happened."""
    settings = StackSettings.from_env()
    if not settings.kafka().provisioned():
        missing("Kafka jars not provisioned: run `make setup`")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        port = free_port_pair()
        broker = LocalKafka(settings.cache, Path(tmp) / "run", settings.kafka_version, port,
                            port + 1)
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()
