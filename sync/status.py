"""Reading the current clock model of every host back from the compacted topic."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from latscope import kafka
from latscope.schemas import codec
from latscope.schemas.records import TOPIC_CLOCK


def read_models(ks: kafka.KafkaSettings | str, topic: str = TOPIC_CLOCK,
                timeout: float = 10.0) -> tuple[dict[str, dict], int]:
    """Latest ClockModel per host (by Kafka key) and the number of undecodable records."""
    c = kafka.consumer(ks, f"latscope-status-{uuid.uuid4()}", **{"enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}, 0
        ends: dict[int, int] = {}
        for p in meta.partitions:
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if hi > 0:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        models: dict[str, dict] = {}
        bad = 0
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
            try:
                _name, rec = codec.decode(msg.value(), expect="ClockModel")
            except codec.DecodeError:
                bad += 1
                continue
            models[(msg.key() or b"").decode() or rec["host"]] = rec
        return models, bad
    finally:
        c.close()


def describe(models: dict[str, dict], now_unix_ms: int | None = None) -> list[dict]:
    """One row per host: offset, drift, error bound and the model's age."""
    now = now_unix_ms if now_unix_ms is not None else int(time.time() * 1000)
    return [{"host": host, "manager": m["manager"], "offset_ns": m["offset_ns"],
             "drift_ppm": m["drift_ppm"], "error_bound_ns": m["error_bound_ns"],
             "samples": m["samples"], "min_delay_ns": m["min_delay_ns"],
             "age_s": (now - m["updated_unix_ms"]) / 1000.0}
            for host, m in sorted(models.items())]
