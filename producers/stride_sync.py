"""The stride level on Kafka, on its own thread: this agent's demand out, every host's
demands in, and the level in effect handed to the agent when it changes (stride_level.py
says why and how).

Demands are read at the door: a message that is not a StrideDemand, whose key is not its
host, or whose level is out of range is counted (``rejected``) and skipped, never applied;
a tombstone (no value) removes its host. This agent's own demand counts at once, even
while the broker is unreachable, so its budget holds without Kafka.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from confluent_kafka import KafkaError, Producer

from latscope import kafka, log, threads
from latscope.producers.stride_level import Demand, Governor, Schedule
from latscope.schemas import codec
from latscope.schemas.records import HOST_NAME_RE, STRIDE_GROUP, TOPIC_STRIDE, TOPICS
from latscope.topic_follow import TopicFollower

_log = log.get("producers.stride_sync")
TICK_S = 0.5
PRIME_S = 3.0     # prime(): how long the fleet's level may hold up an agent's start


@dataclass
class StrideCounters:
    published: int = 0      # demands this agent queued
    delivered: int = 0      # ... that Kafka acknowledged
    failed: int = 0         # ... that it did not
    unqueued: int = 0       # demands the full local queue refused (the heartbeat resends)
    received: int = 0       # demands read (every host's, this one's included)
    rejected: int = 0       # messages that were not a valid demand: skipped
    changes: int = 0        # switches of the level in effect


class StrideLoop:
    """``records()``: this agent's published-records counter; ``apply(level)``: switch the
    agent's probes and grouping to ``size << level`` (called on this thread)."""

    def __init__(self, ks: kafka.KafkaSettings, host: str, budget: int, size: int,
                 records: Callable[[], int], apply: Callable[[int], None],
                 producer: Producer, topic: str = TOPIC_STRIDE) -> None:
        self.host, self.topic, self.ks = host, topic, ks
        self.governor = Governor(host, budget, size)
        self.schedule = Schedule()
        self.counters = StrideCounters()
        self.level = 0
        self._top = self.governor.top
        self._records, self._apply = records, apply
        self._codec = codec.default_codec()
        self._producer = producer     # the agent's (publish.agent_producer): its loop polls
        self._follower: TopicFollower | None = None
        self._reasons: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prime(self) -> None:
        """Apply the fleet's level now, before the agent's probes attach, so that none of
        its first bytes is taken at level 0 while the fleet is above it (a restart under
        load would otherwise publish a second of level 0). Only the level: the governor
        measures from the thread's first tick on (start(), once the probes are attached),
        else the seconds of attaching would read as a rate of 0 and pull the fleet down.
        Bounded: an unreachable broker costs only that head start."""
        try:
            if self._know_topic(PRIME_S):
                self._apply_level(time.time_ns())
        except Exception:
            _log.exception("stride level not read at start")

    def start(self) -> None:
        self._thread = threads.start(self._run, "stride")

    def _run(self) -> None:
        topic_known = self._follower is not None
        while not self._stop.wait(TICK_S):
            try:
                if not topic_known:   # an unreachable broker holds up nothing else
                    topic_known = self._know_topic()
                if self._follower is not None:
                    self._follower.poll()
                self.tick(time.monotonic(), time.time_ns())
            except Exception:     # one bad tick never ends the agent's budget
                _log.exception("stride tick failed")

    def _know_topic(self, timeout: float = 15.0) -> bool:
        try:
            kafka.ensure_topics(self.ks, {self.topic: TOPICS[TOPIC_STRIDE]}, timeout)
        except Exception as e:
            _log.debug("topic %s not checked yet: %s", self.topic, e)
            return False
        self._follower = TopicFollower(self.ks, self.topic,
                                       f"{STRIDE_GROUP}{uuid.uuid4().hex}", self.on_message)
        self._follower.catch_up(min(5.0, timeout))
        return True

    def tick(self, now_s: float, wall_ns: int) -> None:
        """Measure, publish this host's demand when due, apply the level in effect."""
        if self.governor.observe(now_s, self._records(), self.level):
            d = self.governor.demand(now_s, wall_ns)
            self.schedule.add(d)
            self._publish(d)
        self._apply_level(wall_ns)

    def _apply_level(self, wall_ns: int) -> None:
        level = self.schedule.level_at(wall_ns)
        if level != self.level:
            _log.info("agent %s: stride level %d -> %d (%s)", self.host, self.level, level,
                      ", ".join(f"{h} {d.level}" for h, d in sorted(self.schedule.demands.items())))
            self._apply(level)
            self.level = level
            self.counters.changes += 1

    def _publish(self, d: Demand) -> None:
        body = self._codec.encode("StrideDemand", {"schema_version": 1, **asdict(d)})
        try:
            kafka.produce(self._producer, self.topic, body, key=d.host.encode(),
                          on_delivery=self._delivered)
            self.counters.published += 1
        except Exception as e:   # a full local queue: the heartbeat sends it again
            self.counters.unqueued += 1
            _log.warning("stride demand not queued: %s", e)

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.counters.delivered += 1
        else:
            self.counters.failed += 1

    def on_message(self, key: bytes | None, value: bytes | None) -> None:
        host = key.decode(errors="replace") if key else ""
        if value is None:         # a tombstone: the host left
            if host != self.host:
                self.schedule.remove(host)
            return
        try:
            _, r = self._codec.decode(value, expect="StrideDemand")
        except codec.DecodeError as e:
            return self._reject(f"not a StrideDemand ({type(e).__name__})")
        if r["host"] != host or not HOST_NAME_RE.fullmatch(host):
            return self._reject("its key is not its host")
        if not 0 <= r["level"] <= self._top:
            return self._reject(f"level {r['level']} outside 0..{self._top}")
        self.counters.received += 1
        # this host's own counts from tick() on; before its first demand, its previous
        # incarnation's stands (a restart keeps the level: stride_level.py)
        if host != self.host or not self.governor.published:
            self.schedule.add(Demand(host, r["level"], r["effective_ns"], r["sent_ns"],
                                     r["rate"], r["budget"]))

    def _reject(self, why: str) -> None:
        self.counters.rejected += 1
        if why not in self._reasons:
            self._reasons.add(why)
            _log.warning("stride topic %s: a message skipped: %s", self.topic, why)

    def status(self) -> dict:
        g = self.governor
        return {"level": self.level, "demand": g.level, "rate": round(g.rate, 1),
                "budget": g.budget,
                "hosts": {h: d.level for h, d in sorted(self.schedule.demands.items())},
                **asdict(self.counters)}

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._follower is not None:
            self._follower.close()
            self._follower = None

    def close(self) -> None:
        """Once the agent flushed the producer: what Kafka has not acknowledged counts as
        failed."""
        c = self.counters
        c.failed += c.published - c.delivered - c.failed
