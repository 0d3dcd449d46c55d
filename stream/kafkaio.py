"""Plain confluent-kafka helpers for the tools around the worker (demo, tests, benchmark)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import Message

from latscope import kafka


def produce(ks: kafka.KafkaSettings | str, topic: str,
            items: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int]],
            timeout: float = 60.0) -> int:
    """Publish (key, value) pairs, or (key, value, partition) triples, all delivered within
    ``timeout`` or RuntimeError; BufferError is handled by polling, never by dropping."""
    p = kafka.producer(ks, **{"linger.ms": 20, "enable.idempotence": True,
                              "compression.type": "lz4"})
    failed: list = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            failed.append(err)

    n = 0
    deadline = time.monotonic() + timeout
    for key, value, *partition in items:
        try:
            kafka.produce(p, topic, value, key=key,
                          partition=partition[0] if partition else None,
                          on_delivery=report, deadline=deadline)
        except kafka.Aborted as e:
            raise RuntimeError(f"{topic}: {n} records queued, then {e}") from None
        n += 1
        p.poll(0)
    left = p.flush(max(deadline - time.monotonic(), 0.0))
    if left or failed:
        raise RuntimeError(f"{topic}: {left} records undelivered, {len(failed)} failed: "
                           f"{failed[:3]}")
    return n


def consume(ks: kafka.KafkaSettings | str, topic: str, until: Callable[[list[Message]], bool],
            timeout: float = 60, from_beginning: bool = True) -> list[Message]:
    """Read ``topic`` with a fresh group until ``until(messages)`` holds or the deadline."""
    c = kafka.consumer(ks, **{"auto.offset.reset": "earliest" if from_beginning else "latest",
                              "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.5):
                if not msg.error():
                    out.append(msg)
    finally:
        c.close()
    return out
