"""Every worker's own reading of the clock topic: all of its partitions from the beginning
(compacted: one model per host), outside the consumer group, then whatever comes next.

Not a Faust GlobalTable: with two workers of one app id, the one that did not own the clock
partition sometimes never saw a model published after a rebalance (its changelog reader
stopped; faust-streaming issue #283), so its samples went uncorrected. A plain consumer per
worker has no group to rebalance. The group's owner of the clock partition still
dead-letters bad models; the followers skip them."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from latscope import kafka, log

_log = log.get("stream.clock_follow")


class ClockFollower:
    def __init__(self, ks: kafka.KafkaSettings | str, topic: str, group_prefix: str,
                 apply: Callable[[bytes | None, bytes | None], None]) -> None:
        # No offsets are committed; the group id only sits under the worker's ACL prefix.
        self._c = kafka.consumer(ks, f"{group_prefix}-clock-follower",
                                 **{"enable.auto.commit": False,
                                    "enable.partition.eof": False})
        self.topic, self.apply = topic, apply
        self.read = 0
        meta = self._c.list_topics(topic, timeout=10).topics[topic]
        self._parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._c.assign(self._parts)

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read up to each partition's end as it is now (a worker starts with every model)."""
        ends = {tp.partition: self._c.get_watermark_offsets(tp, timeout=10)[1]
                for tp in self._parts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = all(pos.offset >= ends[pos.partition] or ends[pos.partition] == 0
                       for pos in self._c.position(self._parts))
            if done:
                return
            self.poll(0.2)
        _log.warning("clock topic %s not read to its end in %.0f s; going on", self.topic,
                     timeout)

    def poll(self, timeout: float = 0.0) -> None:
        for msg in self._c.consume(500, timeout):
            if msg.error():
                continue
            self.read += 1
            self.apply(msg.key(), msg.value())

    def close(self) -> None:
        self._c.close()
