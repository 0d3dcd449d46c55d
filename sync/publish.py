"""Publishing clock samples and models to Kafka as Avro (single-object encoding).

``latscope.clock`` is compacted and keyed by host, so a reader that starts late still
finds every host's current model; it is created explicitly with ``cleanup.policy=compact``
(auto-creation would make an ordinary, deleting topic). Raw samples go to
``latscope.clock-samples`` (keyed by host too, ordinary retention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import ConfigResource

from latscope import kafka, log
from latscope.schemas import codec
from latscope.schemas.records import COMPACTED, TOPIC_CLOCK, TOPIC_CLOCK_SAMPLES
from latscope.sync.estimator import Model, Sample

_log = log.get("sync.publish")


class TopicError(RuntimeError):
    """A topic exists with settings LatScope cannot use."""


def ensure_topics(ks: kafka.KafkaSettings | str, models_topic: str = TOPIC_CLOCK,
                  samples_topic: str = TOPIC_CLOCK_SAMPLES, timeout: float = 15.0) -> None:
    """Create the model topic compacted and the sample topic; check an existing model topic."""
    kafka.ensure_topics(ks, {models_topic: (1, COMPACTED),
                             samples_topic: (1, {})}, timeout)
    admin = kafka.admin(ks)
    res = ConfigResource(ConfigResource.Type.TOPIC, models_topic)
    config = admin.describe_configs([res], request_timeout=timeout)[res].result()
    policy = config["cleanup.policy"].value
    if "compact" not in policy:
        raise TopicError(f"Kafka topic {models_topic} has cleanup.policy={policy}: expected "
                         "compact (delete it, or set cleanup.policy=compact)")


def sample_record(manager: str, host: str, s: Sample) -> dict:
    # Probe ids are random 64-bit values; Avro's long is signed: the same 64 bits, read as
    # two's complement.
    pid = s.probe_id - (1 << 64) if s.probe_id >= 1 << 63 else s.probe_id
    return {"manager": manager, "host": host, "probe_id": pid, "t1_ns": s.t1,
            "t2_ns": s.t2, "t3_ns": s.t3, "t4_ns": s.t4, "offset_ns": s.offset_ns,
            "delay_ns": float(s.delay_ns)}


def model_record(manager: str, host: str, m: Model, updated_unix_ms: int | None = None) -> dict:
    return {"manager": manager, "host": host, "ref_ns": m.ref_ns, "offset_ns": m.offset_ns,
            "drift_ppm": m.drift_ppm, "error_bound_ns": m.error_bound_ns, "samples": m.samples,
            "min_delay_ns": m.min_delay_ns,
            "updated_unix_ms": updated_unix_ms if updated_unix_ms is not None
            else int(time.time() * 1000)}


@dataclass
class ClockPublisher:
    """Sinks for Manager(on_sample=..., on_model=...); delivery outcomes are counted.

    With the broker gone nothing here blocks for long: a record waits for room in the local
    queue at most ``produce_wait_s``, Kafka gets ``delivery_timeout_s`` to take it, and
    ``flush``/``close`` wait at most their timeout. What never reached Kafka is counted
    (``failed``: refused, timed out or not queued; ``undelivered``: still queued at close)."""

    kafka: kafka.KafkaSettings | str
    manager: str = "manager"
    models_topic: str = TOPIC_CLOCK
    samples_topic: str = TOPIC_CLOCK_SAMPLES
    publish_samples: bool = True
    produce_wait_s: float = 1.0
    # A clock model is worth publishing while it is fresh: older ones are superseded anyway.
    delivery_timeout_s: float = 30.0
    queue_max: int = 100_000
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    undelivered: int = 0

    def __post_init__(self) -> None:
        ensure_topics(self.kafka, self.models_topic, self.samples_topic)
        self._producer: Producer | None = kafka.producer(self.kafka, **{
            "enable.idempotence": True, "compression.type": "zstd", "linger.ms": 20,
            "message.timeout.ms": int(self.delivery_timeout_s * 1000),
            "queue.buffering.max.messages": self.queue_max})   # None once closed

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            _log.warning("clock record not delivered: %s", err)

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        producer = self._producer
        if producer is None:
            self.failed += 1
            return
        try:
            kafka.produce(producer, topic, value, key=key.encode(),
                          on_delivery=self._delivered,
                          deadline=time.monotonic() + self.produce_wait_s)
        except kafka.Aborted as e:
            self.failed += 1
            _log.warning("clock record not queued: %s", e)
            return
        self.produced += 1
        producer.poll(0)

    def sample(self, host: str, s: Sample) -> None:
        if self.publish_samples:
            self._produce(self.samples_topic, host,
                          codec.encode("ClockSample", sample_record(self.manager, host, s)))

    def model(self, host: str, m: Model) -> None:
        self._produce(self.models_topic, host,
                      codec.encode("ClockModel", model_record(self.manager, host, m)))

    def flush(self, timeout: float = 10.0) -> int:
        """Wait at most ``timeout`` for outstanding deliveries; how many are still queued."""
        producer = self._producer
        return producer.flush(timeout) if producer is not None else 0

    def close(self, timeout: float = 10.0) -> int:
        """Flush within ``timeout``, then count what is still queued as ``undelivered`` and
        take no more records; returns that count."""
        if self._producer is None:
            return self.undelivered
        left = self.flush(timeout)
        self._producer = None   # dropped: its threads stop retrying an unreachable broker
        self.undelivered = left
        if left:
            _log.error("%d clock records not delivered to Kafka by the deadline", left)
        return left
