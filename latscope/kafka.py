"""The one Kafka client factory, and the Kafka habits every stage shares.

Every client LatScope makes (the agent's and sync's producers, the stream worker's Faust app,
its producer and admin client, the tools' consumers) is configured here from one
``KafkaSettings``: the bootstrap plus ``kafka.settings`` (librdkafka keys: security, SASL,
TLS…), so a broker one component can reach, every component can reach.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
# librdkafka security keys that have a Faust/aiokafka equivalent (faust_options).
_FAUST_SECURITY = {"security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username",
                   "sasl.password", "ssl.ca.location", "ssl.certificate.location",
                   "ssl.key.location", "ssl.key.password", "ssl.endpoint.identification.algorithm"}


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how to talk to it (``kafka`` section of the config)."""

    bootstrap: str = DEFAULT_BOOTSTRAP
    settings: Mapping[str, str | int | bool] = field(default_factory=dict)  # librdkafka keys

    @classmethod
    def of(cls, value: KafkaSettings | str) -> KafkaSettings:
        """A bare bootstrap string (tools, tests) means no extra settings."""
        return value if isinstance(value, KafkaSettings) else cls(value)

    def config(self, **conf: Any) -> dict[str, Any]:
        """librdkafka configuration: the caller's tuning, then ``kafka.settings`` on top."""
        return {"bootstrap.servers": self.bootstrap, **conf, **self.settings}

    def __repr__(self) -> str:   # never the settings' values: they hold passwords
        return f"KafkaSettings(bootstrap={self.bootstrap!r}, settings={sorted(self.settings)})"


def producer(ks: KafkaSettings | str, **conf: Any) -> Producer:
    return Producer(KafkaSettings.of(ks).config(**conf))


def consumer(ks: KafkaSettings | str, group_id: str | None = None, **conf: Any) -> Consumer:
    """A consumer; without ``group_id`` a fresh throwaway group (tools that only read)."""
    return Consumer(KafkaSettings.of(ks).config(
        **{"group.id": group_id or f"latscope-read-{uuid.uuid4().hex}", **conf}))


def admin(ks: KafkaSettings | str) -> AdminClient:
    return AdminClient(KafkaSettings.of(ks).config())


def faust_options(ks: KafkaSettings | str) -> dict[str, Any]:
    """``faust.App`` keyword arguments for the same broker: its URLs and, when
    ``kafka.settings`` asks for TLS or SASL, the matching credentials. A librdkafka security
    key Faust cannot honour is an error naming the key (never its value)."""
    ks = KafkaSettings.of(ks)
    opts: dict[str, Any] = {"broker": [f"kafka://{b.strip()}" for b in ks.bootstrap.split(",")]}
    s = {k: v for k, v in ks.settings.items() if k.startswith(("security.", "sasl.", "ssl."))}
    unknown = sorted(set(s) - _FAUST_SECURITY)
    if unknown:
        raise ValueError(f"kafka.settings: {', '.join(unknown)}: not supported by the stream "
                         f"worker's Kafka client (supported: {', '.join(sorted(_FAUST_SECURITY))})")
    proto = str(s.get("security.protocol", "PLAINTEXT")).upper()
    if proto == "PLAINTEXT":
        return opts
    import faust  # only the worker needs it

    context = None
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=s.get("ssl.ca.location") or None)
        if s.get("ssl.certificate.location"):
            context.load_cert_chain(str(s["ssl.certificate.location"]),
                                    str(s.get("ssl.key.location") or s["ssl.certificate.location"]),
                                    password=s.get("ssl.key.password") or None)
        if str(s.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
            context.check_hostname = False
    if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
        mech = str(s.get("sasl.mechanism") or s.get("sasl.mechanisms") or "PLAIN").upper()
        opts["broker_credentials"] = faust.SASLCredentials(
            username=str(s.get("sasl.username", "")), password=str(s.get("sasl.password", "")),
            mechanism=mech, ssl_context=context)
    elif proto == "SSL":
        opts["broker_credentials"] = faust.SSLCredentials(context)
    else:
        raise ValueError(f"kafka.settings: security.protocol: expected PLAINTEXT, SSL, "
                         f"SASL_PLAINTEXT or SASL_SSL, got {proto!r}")
    return opts


class Aborted(RuntimeError):
    """The local queue stayed full until the caller's abort event was set or its deadline
    passed (not queued)."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random) gives a message
    with this key: CRC-32 of the key modulo the partitions. A writer that batches several
    keys into one message sends it there, so every key keeps its partition."""
    return zlib.crc32(key) % partitions


def produce(producer: Producer, topic: str, value: bytes | None, *, key: bytes | None = None,
            partition: int | None = None, headers: dict[str, bytes] | None = None,
            on_delivery: Callable[[KafkaError | None, object], None] | None = None,
            abort: threading.Event | None = None, deadline: float | None = None,
            wait_s: float = 0.05) -> int:
    """Queue one message. A full local queue (BufferError) is waited out by serving delivery
    reports, never by dropping; returns how many times it waited. Raises Aborted (not
    queued: the caller counts it) once ``abort`` is set (shutdown with the broker gone) or
    the ``deadline`` (time.monotonic()) has passed with the queue still full."""
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
            if deadline is not None and time.monotonic() >= deadline:
                raise Aborted(f"{topic}: local queue still full at the deadline") from None
            waits += 1
            left = wait_s if deadline is None else min(wait_s, deadline - time.monotonic())
            producer.poll(max(left, 0.0))
            if abort is not None and abort.is_set():
                raise Aborted(f"{topic}: local queue full at shutdown") from None


def ensure_topics(ks: KafkaSettings | str, wanted: Mapping[str, tuple[int, dict[str, str]]],
                  timeout: float = 15.0) -> dict[str, int]:
    """Create the missing topics of ``{name: (partitions, config)}``, wait until every one is
    visible, and return each one's partition count (existing topics keep theirs)."""
    ks = KafkaSettings.of(ks)
    adm = admin(ks)
    meta = adm.list_topics(timeout=timeout)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1, config=cfg)
               for t, (n, cfg) in wanted.items() if t not in meta.topics]
    for fut in adm.create_topics(missing, request_timeout=timeout).values() if missing else ():
        try:
            fut.result(timeout)
        except KafkaException as e:   # created concurrently by another process: fine
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while True:
        meta = adm.list_topics(timeout=timeout)
        have = {t: len(meta.topics[t].partitions) for t in wanted
                if t in meta.topics and meta.topics[t].partitions}
        if len(have) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(have) != len(wanted):
        raise RuntimeError(f"topics not visible on {ks.bootstrap}: {sorted(set(wanted) - set(have))}")
    return have


def delete_topics(ks: KafkaSettings | str, wanted: Callable[[str], object],
                  timeout: float = 10.0) -> list[str]:
    """Delete every topic whose name ``wanted`` accepts (a run's own topics, Faust's
    changelogs included); the names deleted."""
    adm = admin(ks)
    names = [t for t in adm.list_topics(timeout=timeout).topics if wanted(t)]
    for fut in adm.delete_topics(names).values() if names else ():
        fut.result(timeout)
    return names


def delete_topics_with_prefix(ks: KafkaSettings | str, prefix: str,
                              timeout: float = 10.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; the names deleted."""
    return delete_topics(ks, lambda t: t.startswith(prefix), timeout)


def group_lag(ks: KafkaSettings | str, group: str, topics: list[str],
              timeout: float = 10.0) -> dict[str, int]:
    """Per topic, the messages the group has not committed yet: each partition's end offset
    less its committed offset (nothing committed: everything the partition still holds).
    Read from the broker, outside the group (nothing joins it); a missing topic is left out."""
    c = consumer(ks, group, **{"enable.auto.commit": False})
    try:
        meta = c.list_topics(timeout=timeout).topics
        parts = [TopicPartition(t, p) for t in topics if t in meta and not meta[t].error
                 for p in meta[t].partitions]
        lag = {t: 0 for t in topics if t in meta and not meta[t].error}
        for tp in c.committed(parts, timeout=timeout) if parts else ():
            low, high = c.get_watermark_offsets(tp, timeout=timeout)
            lag[tp.topic] += high - max(tp.offset, low)
        return lag
    finally:
        c.close()
