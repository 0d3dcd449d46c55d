"""Kafka helpers the stream and fault tests share: a worker's topics, what the broker holds
of a topic, and what a consumer group committed (the broker's word, not the worker's)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from latscope import kafka
from latscope.schemas import codec


@dataclass
class Topics:
    """A test worker's topics, every one its own: a worker reads its flow-stats topic from
    the beginning, and on the shared default one the acks of other tests' agents' messages
    made Faust commit (every 10 000 acks) in a test that needs nothing committed."""

    layer: str
    clock: str
    breakdowns: str
    dead_letter: str
    flow_stats: str

    @classmethod
    def named(cls, prefix: str) -> Topics:
        return cls(f"{prefix}-layer", f"{prefix}-clock", f"{prefix}-bd", f"{prefix}-dlq",
                   f"{prefix}-fs")

    def args(self) -> list[str]:
        return ["--layer-topic", self.layer, "--clock-topic", self.clock,
                "--breakdown-topic", self.breakdowns, "--dead-letter-topic", self.dead_letter,
                "--flow-stats-topic", self.flow_stats]


def topic_values(bootstrap: str, topic: str, timeout: float = 60) -> list[bytes]:
    """Every message value in ``topic`` on the broker, read from the start to its high
    watermarks (as they were when called)."""
    c = kafka.consumer(bootstrap, **{"auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        left = {p: end for p, end in ends.items() if end > 0}
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.5):
                if msg.error() or msg.partition() not in left:
                    continue
                out.append(msg.value())
                if msg.offset() + 1 >= left[msg.partition()]:
                    del left[msg.partition()]
        assert not left, f"{topic}: partitions {sorted(left)} not read to their end"
        return out
    finally:
        c.close()


def events_in_topic(bootstrap: str, topic: str) -> int:
    """LayerEvents on the broker in ``topic`` (agents batch them into messages)."""
    return sum(len(codec.decode_layer_events(v)) for v in topic_values(bootstrap, topic))


def breakdowns_in_topic(bootstrap: str, topic: str) -> list[dict]:
    return [codec.decode(v, expect="Breakdown")[1] for v in topic_values(bootstrap, topic)]


def committed(bootstrap: str, group: str, topic: str) -> int:
    """Messages of ``topic`` the group's committed offsets account for, per the broker."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in
                 c.list_topics(topic, timeout=10).topics[topic].partitions]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def wait_committed(bootstrap: str, group: str, topic: str, n: int, timeout: float = 30) -> None:
    """Until the group's committed offsets on the topic add up to n messages."""
    deadline = time.monotonic() + timeout
    while (done := committed(bootstrap, group, topic)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{group}: {done} of {n} offsets committed")
        time.sleep(0.2)   # polling the broker's answer, not waiting for it to happen
