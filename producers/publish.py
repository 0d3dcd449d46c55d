"""Publish LayerEvent records to Kafka (confluent-kafka): idempotent, compressed, every
delivery outcome counted, a full local queue waited out (BufferError), never dropped.

The records of one flow go out together as one LayerEventBatch message (key = the flow id,
so the partition is the one each record would have had alone): a busy flow yields tens of
thousands of records a second, and a message each would cost the agent, the broker and the
stream worker far more than the records themselves."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import KafkaError, Producer

from latscope import kafka, log
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Record
from latscope.schemas.records import TOPIC_LAYER_EVENTS

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


@dataclass
class LayerEventPublisher:
    bootstrap: str
    topic: str = TOPIC_LAYER_EVENTS
    settings: dict = field(default_factory=dict)
    linger_ms: int = 50
    counters: PublishCounters = field(default_factory=PublishCounters)

    def __post_init__(self) -> None:
        self._producer = Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
            "compression.type": "zstd", "linger.ms": self.linger_ms,
            "batch.num.messages": 10_000, **self.settings})
        self._last_error = ""
        self._encoder = LayerEventEncoder()

    def _delivered(self, n: int, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.counters.delivered += n
        else:
            self.counters.failed += n
            if str(err) != self._last_error:   # log each distinct error once in a row
                self._last_error = str(err)
                _log.warning("%d layer events not delivered: %s", n, err)

    def publish_all(self, records: Sequence[Record], abort: threading.Event | None = None) -> None:
        """Queue records, one batch message per flow (at most MAX_BATCH each). A full queue
        is waited out (never dropped) unless `abort` gets set meanwhile (shutdown with the
        broker unreachable): then what is left counts as failed."""
        by_flow: dict[str, list[bytes]] = {}
        body = self._encoder.body
        for r in records:
            bodies = by_flow.get(r.flow_id)
            if bodies is None:
                bodies = by_flow[r.flow_id] = []
            bodies.append(body(r))
        for fid, bodies in by_flow.items():
            key = fid.encode()
            for i in range(0, len(bodies), MAX_BATCH):
                chunk = bodies[i:i + MAX_BATCH]
                try:
                    self.counters.buffer_waits += kafka.produce(
                        self._producer, self.topic, self._encoder.batch(chunk), key=key,
                        on_delivery=partial(self._delivered, len(chunk)), abort=abort)
                except kafka.Aborted:
                    self.counters.failed += len(bodies) - i
                    break
                self.counters.produced += len(chunk)
                self.counters.messages += 1

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding deliveries; returns how many records are still undelivered
        (counted as failed: the producer goes away with them)."""
        self._producer.flush(timeout)
        c = self.counters
        left = c.produced - c.delivered - c.failed
        c.failed += left
        return left

    def close(self) -> None:
        """Drop the producer (its threads stop retrying an unreachable broker)."""
        self._producer = None  # type: ignore[assignment]
