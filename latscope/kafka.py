"""The Kafka habits every stage shares: queue a message without ever dropping it, and
create the topics a stage needs."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


class Aborted(RuntimeError):
    """The local queue stayed full until the caller's abort event was set (not queued)."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random) gives a message
    with this key: CRC-32 of the key modulo the partitions. A writer that batches several
    keys into one message sends it there, so every key keeps its partition."""
    return zlib.crc32(key) % partitions


def produce(producer: Producer, topic: str, value: bytes | None, *, key: bytes | None = None,
            partition: int | None = None, headers: dict[str, bytes] | None = None,
            on_delivery: Callable[[KafkaError | None, object], None] | None = None,
            abort: threading.Event | None = None, wait_s: float = 0.05) -> int:
    """Queue one message. A full local queue (BufferError) is waited out by serving delivery
    reports, never by dropping; returns how many times it waited. With ``abort`` (shutdown
    with the broker gone) raises Aborted once that is set, so the caller counts a failure."""
    waits = 0
    kwargs: dict = {"key": key, "headers": headers}
    if partition is not None:
        kwargs["partition"] = partition
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value=value, **kwargs)
            return waits
        except BufferError:
            waits += 1
            producer.poll(wait_s)
            if abort is not None and abort.is_set():
                raise Aborted(f"{topic}: local queue full at shutdown") from None


def ensure_topics(bootstrap: str, wanted: Mapping[str, tuple[int, dict[str, str]]],
                  settings: Mapping[str, object] | None = None,
                  timeout: float = 15.0) -> dict[str, int]:
    """Create the missing topics of ``{name: (partitions, config)}``, wait until every one is
    visible, and return each one's partition count (existing topics keep theirs)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(settings or {})})
    meta = admin.list_topics(timeout=timeout)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1, config=cfg)
               for t, (n, cfg) in wanted.items() if t not in meta.topics]
    for fut in admin.create_topics(missing, request_timeout=timeout).values() if missing else ():
        try:
            fut.result(timeout)
        except KafkaException as e:   # created concurrently by another process: fine
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout)
        have = {t: len(meta.topics[t].partitions) for t in wanted
                if t in meta.topics and meta.topics[t].partitions}
        if len(have) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(have) != len(wanted):
        raise RuntimeError(f"topics not visible on {bootstrap}: {sorted(set(wanted) - set(have))}")
    return have


def delete_topics_with_prefix(bootstrap: str, prefix: str, timeout: float = 10.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a run's own topics, Faust's
    changelogs included); the names deleted."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=timeout).topics if t.startswith(prefix)]
    for fut in admin.delete_topics(names).values() if names else ():
        fut.result(timeout)
    return names
