"""Publish LayerEvent records to Kafka (confluent-kafka): idempotent, compressed, every
delivery outcome counted, a full local queue waited out (BufferError), never dropped."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Producer

from latscope import kafka, log
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Record
from latscope.schemas.records import TOPIC_LAYER_EVENTS

_log = log.get("producers.publish")


@dataclass
class PublishCounters:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    buffer_waits: int = 0      # times the local queue was full and we waited for deliveries


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

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.counters.delivered += 1
        else:
            self.counters.failed += 1
            if str(err) != self._last_error:   # log each distinct error once in a row
                self._last_error = str(err)
                _log.warning("layer event not delivered: %s", err)

    def publish(self, record: Record, abort: threading.Event | None = None) -> bool:
        """Queue one record; a full queue is waited out (never dropped) unless `abort` gets
        set meanwhile (shutdown with the broker unreachable): then it counts as failed."""
        value = self._encoder.encode(record)
        key = record.flow_id.encode()
        try:
            self.counters.buffer_waits += kafka.produce(
                self._producer, self.topic, value, key=key, on_delivery=self._delivered,
                abort=abort)
        except kafka.Aborted:
            self.counters.failed += 1
            return False
        self.counters.produced += 1
        return True

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered (counted
        as failed: the producer goes away with them)."""
        left = self._producer.flush(timeout)
        self.counters.failed += left
        return left

    def close(self) -> None:
        """Drop the producer (its threads stop retrying an unreachable broker)."""
        self._producer = None  # type: ignore[assignment]
