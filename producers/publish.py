"""Publish LayerEvent records to Kafka (confluent-kafka): idempotent, compressed, every
delivery outcome counted, a full local queue waited out (BufferError), never dropped.

Records go out together as LayerEventBatch messages, one per partition: a busy flow yields
tens of thousands of records a second, and many flows a few each, and a message per record
(or per flow) would cost the agent, the broker and the stream worker far more than the
records themselves. Every record still lands in its flow's partition: the message goes to
the partition librdkafka would give a message keyed by that flow id (``kafka.partition_of``),
which is what the join relies on. The publisher creates the topic as the worker would (its
partitions, the broker's clock); until the broker has answered, a flow's records go out
keyed by its flow id.

A partition's records wait here until the oldest of them is due: `wait_ns` after its first
hit, the latest that still reaches the worker inside its join window (agent.py). librdkafka
sends one partition per produce request, and each request costs the broker far more than
its records; a record whose byte completed at once would otherwise go out within a linger,
its partition's next ones in the next request (docs/cpu-budget.md)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import KafkaError, Producer

from latscope import kafka, log, threads
from latscope.producers._native import bucket
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Record
from latscope.schemas.records import (
    LAYER_EVENTS_CONFIG,
    LAYER_EVENTS_PARTITIONS,
    TOPIC_LAYER_EVENTS,
)

_log = log.get("producers.publish")
MAX_BATCH = 500     # events per message: ~150 KB, well under the broker's 1 MB default


@dataclass
class PublishCounters:
    """Counted in records (LayerEvents), not messages."""
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    buffer_waits: int = 0      # times the local queue was full and we waited for deliveries
    messages: int = 0          # Kafka messages (batches) queued


def agent_producer(ks: kafka.KafkaSettings | str, linger_ms: int) -> Producer:
    """The agent's one Kafka producer: its records, its flow context and its stride demands
    share it, so an agent holds one broker connection and one set of librdkafka threads
    (docs/cpu-budget.md). Each partition still takes a produce request of its own: librdkafka
    puts one partition in a request.

    No auto-creation by the first produce: a broker that allows it would make a topic with
    its defaults (CreateTime, whatever partition count) before its writer creates it as the
    reader expects; messages for it wait for that instead (a race seen once in CI). lz4, as
    the worker's own outputs: zstd cost librdkafka's thread more than twice the CPU at the
    same load."""
    return kafka.producer(ks, **{"enable.idempotence": True, "acks": "all",
                                 "compression.type": "lz4", "linger.ms": linger_ms,
                                 "batch.num.messages": 10_000,
                                 "allow.auto.create.topics": False})


def _itself(fid: str) -> str:
    """A flow's group while the partition count is unknown: the flow itself (its key)."""
    return fid


def encoded(records: Sequence[Record],
            encoder: LayerEventEncoder) -> list[tuple[str, bytes, int]]:
    """Records as the native path hands them on: (flow id, LayerEvent body, first hit)."""
    body = encoder.body
    return [(r.flow_id, body(r), r.hits[0].ts_ns if r.hits else 0) for r in records]


@dataclass
class LayerEventPublisher:
    kafka: kafka.KafkaSettings | str
    topic: str = TOPIC_LAYER_EVENTS
    linger_ms: int = 50
    # How long after its first hit a record may wait for its partition's next ones (the
    # clock of the hits and of publish's `now`); 0: every publish call produces what it has.
    wait_ns: int = 0
    counters: PublishCounters = field(default_factory=PublishCounters)

    def __post_init__(self) -> None:
        self.producer = agent_producer(self.kafka, self.linger_ms)
        self._last_error = ""
        self._encoder = LayerEventEncoder()
        self._partitions: int | None = None      # known once the topic is (see _know_topic)
        self._pending: dict[str | int, list[bytes]] = {}   # partition (or flow id) -> bodies
        self._due: dict[str | int, int] = {}               # ... -> when its oldest is due
        # records added and not yet produced (a count: status() reads it from other threads)
        self.waiting = 0
        self._closed = threading.Event()
        threads.start(self._know_topic, "layer-topic")

    def _delivered(self, n: int, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.counters.delivered += n
        else:
            self.counters.failed += n
            if str(err) != self._last_error:   # log each distinct error once in a row
                self._last_error = str(err)
                _log.warning("%d layer events not delivered: %s", n, err)

    def publish_all(self, records: Sequence[Record], now: int | None,
                    abort: threading.Event | None = None) -> None:
        """Add records (see publish_encoded)."""
        self.publish_encoded(encoded(records, self._encoder), now, abort)

    def publish_encoded(self, records: list[tuple[str, bytes, int]], now: int | None,
                        abort: threading.Event | None = None) -> None:
        """Add (flow id, LayerEvent body, first hit) triples to their partitions' (each
        flow's while the partition count is unknown) waiting records, then produce every
        partition whose oldest record is due at `now` or which holds a full message
        (MAX_BATCH); `now` None: every partition. The per-record loop is C's (bucket), as it
        runs for every record the agent publishes. A full queue is waited out (never
        dropped) unless `abort` gets set meanwhile (shutdown with the broker unreachable):
        then what is left counts as failed."""
        n = self._partitions
        pending, due = self._pending, self._due
        self.waiting += bucket(records, pending, due, (lambda fid: kafka.partition_of(
            fid.encode(), n)) if n else _itself, self.wait_ns)
        ready = [g for g, t in due.items()
                 if now is None or t <= now or len(pending[g]) >= MAX_BATCH]
        for g in ready:
            del due[g]
            bodies = pending.pop(g)
            self.waiting -= len(bodies)
            self._produce(g, bodies, abort)

    def _produce(self, g: str | int, bodies: list[bytes], abort: threading.Event | None) -> None:
        dest = {"key": g.encode()} if isinstance(g, str) else {"partition": g}
        for i in range(0, len(bodies), MAX_BATCH):
            chunk = bodies[i:i + MAX_BATCH]
            try:
                self.counters.buffer_waits += kafka.produce(
                    self.producer, self.topic, self._encoder.batch(chunk), **dest,
                    on_delivery=partial(self._delivered, len(chunk)), abort=abort)
            except kafka.Aborted:
                self.counters.failed += len(bodies) - i
                return
            self.counters.produced += len(chunk)
            self.counters.messages += 1

    def _know_topic(self) -> None:
        """Create the topic as the worker would, unless it exists, and learn its partition
        count; retried every 5 s in the background until the broker answers, so a broker
        that is not up yet holds up neither the probes nor the agent's loop."""
        while self.producer is not None:
            try:
                parts = kafka.ensure_topics(self.kafka, {self.topic: (
                    LAYER_EVENTS_PARTITIONS, LAYER_EVENTS_CONFIG)})
                self._partitions = parts[self.topic]
                return
            except Exception as e:   # unreachable broker: deliveries report their own failures
                _log.debug("topic %s not checked yet: %s", self.topic, e)
            self._closed.wait(5)

    def poll(self) -> None:
        """Serves the delivery reports of everything on the shared producer. The agent's
        loop is the one poller, but for a part whose message meets a full local queue
        (kafka.produce waits it out by polling)."""
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0, abort: threading.Event | None = None) -> int:
        """Produce every waiting record, wait for outstanding deliveries; returns how many
        records are still undelivered (counted as failed: the producer goes away with them)."""
        self.publish_encoded([], None, abort)
        self.producer.flush(timeout)
        c = self.counters
        left = c.produced - c.delivered - c.failed
        c.failed += left
        return left

    def close(self) -> None:
        """Drop the producer (its threads stop retrying an unreachable broker)."""
        self._closed.set()
        self.producer = None  # type: ignore[assignment]
