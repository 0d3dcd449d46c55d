"""A reader of a compacted topic keyed by host (one current entry per host: the clock
models, the stride demands): all of its partitions from the beginning, outside any consumer
group, then whatever comes next. Every reader has all of it, and none has a group to
rebalance.

Not a Faust GlobalTable for the stream worker's clock models: with two workers of one app
id, the one that did not own the clock partition sometimes never saw a model published
after a rebalance (its changelog reader stopped; faust-streaming issue #283), so its
samples went uncorrected. The group's owner of the clock partition still dead-letters bad
models; the followers skip them."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from latscope import kafka, log

_log = log.get("topic_follow")
_LOOK_EVERY_S = 5.0   # while the topic has no partitions


class TopicFollower:
    """``apply(key, value)`` for every message, in order; ``group_id``: never joined, no
    offsets committed; it only has to sit under the reader's ACL prefix."""

    def __init__(self, ks: kafka.KafkaSettings | str, topic: str, group_id: str,
                 apply: Callable[[bytes | None, bytes | None], None]) -> None:
        self._c = kafka.consumer(ks, group_id,
                                 **{"enable.auto.commit": False,
                                    "enable.partition.eof": False})
        self.topic, self.apply = topic, apply
        self._parts: list[TopicPartition] = []
        self._next_look = 0.0
        self._look(10)

    def _look(self, timeout: float) -> None:
        """Assign the topic's partitions, from the beginning, if it has any yet: a reader
        may start before the first writer created the topic."""
        self._next_look = time.monotonic() + _LOOK_EVERY_S
        try:
            meta = self._c.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        except KafkaException as e:
            _log.warning("topic %s: %s; looking again in %.0f s", self.topic, e,
                         _LOOK_EVERY_S)
            return
        if meta is None or meta.error is not None or not meta.partitions:
            return
        self._parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._c.assign(self._parts)

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read up to each partition's end as it is now (a reader starts with every entry).
        A partition whose records compaction removed (low == high) holds nothing to read.
        Kafka errors here only cost the entries' head start: poll() reads them later."""
        deadline = time.monotonic() + timeout
        try:
            marks = {tp.partition: self._c.get_watermark_offsets(tp, timeout=10)
                     for tp in self._parts}
            left = {p for p, (low, high) in marks.items() if high > low}
            while left and time.monotonic() < deadline:
                self.poll(0.2)
                left = {pos.partition for pos in self._c.position(self._parts)
                        if pos.partition in left and pos.offset < marks[pos.partition][1]}
        except KafkaException as e:
            _log.warning("topic %s not read to its end (%s); going on", self.topic, e)
            return
        if left:
            _log.warning("topic %s not read to its end in %.0f s; going on", self.topic,
                         timeout)

    def poll(self, timeout: float = 0.0) -> None:
        if not self._parts:
            if time.monotonic() < self._next_look:
                return
            self._look(1)
        for msg in self._c.consume(500, timeout):
            if not msg.error():
                self.apply(msg.key(), msg.value())

    def close(self) -> None:
        self._c.close()
