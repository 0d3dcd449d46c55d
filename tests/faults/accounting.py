"""What a fault cost, from counts kept outside the system under test: the agents' own
counters, the broker's topic contents, InfluxDB's points."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from latscope import kafka
from latscope.schemas import codec


def events_in_topic(bootstrap: str, topic: str, timeout: float = 60) -> int:
    """LayerEvents on the broker in ``topic``, read from the start to its high watermarks."""
    c = kafka.consumer(bootstrap, **{"auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        left = {p: end for p, end in ends.items() if end > 0}
        n = 0
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.5):
                if msg.error():
                    continue
                n += len(codec.decode_layer_events(msg.value()))
                if msg.offset() + 1 >= left.get(msg.partition(), 0):
                    left.pop(msg.partition(), None)
        assert not left, f"{topic}: partitions {sorted(left)} not read to their end"
        return n
    finally:
        c.close()


@dataclass(frozen=True)
class Records:
    """Every record the agents made, and where it went. ``lost`` is what no count explains:
    made, not counted as failed by the agent, and not joined by the worker."""

    offered: int          # records the agents' grouping made (their own counter)
    failed: int           # counted by the agents as not delivered
    delivered: int        # acknowledged by the broker (agents' delivery reports)
    in_topic: int         # on the broker, read back
    consumed: int         # read by the worker
    late: int             # read by the worker after their sample had closed
    samples: int          # samples the worker closed (complete + incomplete)
    complete: int

    @property
    def joined(self) -> int:
        return self.consumed - self.late

    @property
    def lost(self) -> int:
        return self.offered - self.failed - self.joined

    @classmethod
    def of(cls, agents: dict[str, dict], worker: dict, in_topic: int) -> Records:
        def total(key: str) -> int:
            return sum(a["counters"][key] for a in agents.values())

        return cls(offered=total("records"), failed=total("failed_deliveries"),
                   delivered=total("published"), in_topic=in_topic,
                   consumed=worker["records"], late=worker["join_late"],
                   samples=worker["complete"] + worker["incomplete"],
                   complete=worker["complete"])
