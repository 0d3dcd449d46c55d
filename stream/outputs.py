"""The worker's outputs and their one commit barrier.

Outputs: breakdowns and dead letters (Kafka, through a librdkafka producer), the tables'
changelogs (through Faust's producer), statistics and raw samples (the sink: InfluxDB).
Faust commits the offsets of acknowledged messages; the worker acknowledges them only in
the barrier Faust runs right before it picks those offsets (a sensor's
on_commit_initiated), once everything that came of them is acknowledged. A committed
offset thus means its input's breakdowns are on Kafka, its table changes in the
changelog and its statistics in InfluxDB, or counted as failed (at-least-once).

Each commit interval ("epoch") holds its messages, its table changes (sealed at the
barrier that ends it, sent once it settles) and the sink's mark then. It settles when
Kafka has acknowledged every output produced before its barrier and the sink has settled
up to its mark: offsets and changelog move together, so a restarted worker recovers the
state its committed offsets left off at. A closed window's tombstone is one of its epoch's
changes, so it never reaches the changelog before the sink has the window's points; if the
worker dies first, the window comes back from the changelog and is written again (same
series and time: overwritten).

Kafka outputs are flushed at the barrier, not per batch: librdkafka has been sending all
along, while flushing per batch left the worker idle waiting for acks (and Faust's own
producer awaits one message at a time). The sink is not waited for: its writer sends all
along, so an epoch normally settles at the next barrier. Waits block the event loop at
most ``wait_s``, and once Kafka has missed that deadline barriers only look until it
acknowledges again (an outage costs one wait, not one per commit); a full local queue is
waited for at most ``wait_s`` too. What is unacknowledged keeps its offsets and changelog records
where they were (``commits_held_back``). The barrier waits for the sink only when
draining (rebalance, shutdown) or when more than ``max_behind`` epochs are unsettled: a
slow sink then slows the worker down rather than letting input pile up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from latscope import kafka, log
from latscope.stream.changes import Record
from latscope.stream.sink import StatsSink

_log = log.get("stream")

# Messages taken in together, and whatever acknowledges them (the worker: its stream's ack).
Held = tuple[Any, Sequence[Any]]


@dataclass
class OutputCounters:
    publish_failed: int = 0      # delivery reports with an error (after librdkafka's retries)
    commits: int = 0             # barriers run
    commits_held_back: int = 0   # barriers that left outputs unacknowledged (waited wait_s once)
    changelog_records: int = 0   # sent, settled

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Epoch:
    seq: int
    held: list[Held]
    changes: list[Record]
    sink_mark: int
    messages: int = field(init=False)

    def __post_init__(self) -> None:
        self.messages = sum(len(batch) for _, batch in self.held)


class Outputs:
    """``send_changelog``: a sealed record to its table's changelog; ``ack``: acknowledge
    held messages (Faust may then commit their offsets)."""

    def __init__(self, ks: kafka.KafkaSettings | str, sink: StatsSink | None,
                 send_changelog: Callable[[Record], None],
                 ack: Callable[[Any, Sequence[Any]], None],
                 wait_s: float = 2.0, max_behind: int = 3) -> None:
        self.sink = sink
        self.counters = OutputCounters()
        self.producer = kafka.producer(ks, **{
            "linger.ms": 5, "enable.idempotence": True, "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000, "delivery.report.only.error": True,
            "on_delivery": self._delivered})
        self._send_changelog = send_changelog
        self._ack = ack
        self.wait_s = wait_s
        self.max_behind = max_behind
        self._unflushed = 0          # produced since the last complete flush
        self._held: list[Held] = []  # taken in since the last barrier
        self._epochs: deque[_Epoch] = deque()
        self._seq = 0                # epochs sealed
        self._kafka_through = 0      # every epoch up to this one has its Kafka outputs acked
        # Kafka did not acknowledge by a deadline: barriers look without waiting until it
        # does again, so an outage blocks the event loop once, not at every commit.
        self._stalled = False
        self._closed = False

    # -- while processing -------------------------------------------------------------------
    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: dict[str, bytes] | None = None) -> None:
        """Queue one output. A full local queue is waited for at most ``wait_s``, and not
        at all while Kafka is not acknowledging: the record is then counted failed."""
        wait = 0.0 if self._stalled else self.wait_s
        try:
            kafka.produce(self.producer, topic, value, key=key, headers=headers,
                          deadline=time.monotonic() + wait)
        except kafka.Aborted as e:
            self.counters.publish_failed += 1
            if not self._stalled:
                _log.error("Kafka outputs not acknowledged, queue full: %s", e)
            self._stalled = True
            return
        self._unflushed += 1

    def poll(self) -> None:
        """Serve delivery reports (errors are counted); acks are awaited at the barrier."""
        self.producer.poll(0)

    def hold(self, owner: Any, messages: Sequence[Any]) -> None:
        """Messages whose outputs were all handed over: acknowledged once those are."""
        if messages:
            self._held.append((owner, messages))

    # -- the barrier ------------------------------------------------------------------------
    def barrier(self, changes: Sequence[Record], drain: bool = False) -> bool:
        """End this epoch (``changes``: its table changes, sealed) and settle every epoch
        whose outputs are acknowledged, oldest first. ``drain``: wait for all of them.
        Returns whether none is left unsettled."""
        self.counters.commits += 1
        sink = self.sink
        self._seal(changes)
        if not self._epochs:
            return True
        if sink is not None:
            sink.send_now()
        deadline = time.monotonic() + self.wait_s
        on_time = self._flush(deadline)
        if on_time and sink is not None:
            if drain:
                on_time = sink.wait_settled(self._epochs[-1].sink_mark, deadline - time.monotonic())
            elif len(self._epochs) > self.max_behind:
                on_time = sink.wait_settled(self._epochs[0].sink_mark, deadline - time.monotonic())
        if not on_time:
            self.counters.commits_held_back += 1
        self._settle()
        return not self._epochs

    def _seal(self, changes: Sequence[Record]) -> None:
        """End the current epoch (if anything happened in it)."""
        if changes or self._held:
            self._seq += 1
            self._epochs.append(_Epoch(self._seq, self._held, list(changes),
                                       self.sink.mark() if self.sink is not None else 0))
            self._held = []

    def _flush(self, deadline: float) -> bool:
        """Wait until every Kafka output so far is acknowledged, up to the deadline (not at
        all while Kafka is stalled)."""
        if self._unflushed:
            if self._stalled:
                deadline = time.monotonic()
            while (left := self.producer.flush(max(0.0, min(5.0, deadline - time.monotonic())))):
                if time.monotonic() >= deadline:
                    if not self._stalled:
                        _log.warning("Kafka has not acknowledged %d records: offsets held "
                                     "back, commits no longer wait for it", left)
                    self._stalled = True
                    return False
                _log.warning("still waiting for Kafka to acknowledge %d records", left)
            self._unflushed = 0
        self._stalled = False
        self._kafka_through = self._seq
        return True

    def _settle(self, messages: bool = True) -> None:
        """Send and acknowledge the settled epochs, oldest first. ``messages=False``: only
        those without messages (their offsets can no longer be committed)."""
        settled = self.sink.settled() if self.sink is not None else 0
        epochs = self._epochs
        while epochs and epochs[0].seq <= self._kafka_through and epochs[0].sink_mark <= settled:
            if not messages and epochs[0].messages:
                return
            epoch = epochs.popleft()
            for rec in epoch.changes:
                self._send_changelog(rec)
            self.counters.changelog_records += len(epoch.changes)
            for owner, batch in epoch.held:
                self._ack(owner, batch)

    # -- state ------------------------------------------------------------------------------
    def gauges(self) -> dict[str, int]:
        """Epochs whose outputs await acknowledgement, and the input messages in them."""
        held = sum(e.messages for e in self._epochs) + sum(len(b) for _, b in self._held)
        return {"epochs_unsettled": len(self._epochs), "messages_held": held}

    def close(self, changes: Sequence[Record] = ()) -> None:
        """After the consumer's last commit: flush Kafka, close the sink (it sends what it
        holds, within its retry budget), then send the changes that are settled, as far as
        they carry no input messages: their offsets can no longer be committed, and the
        changes of input that will be read again would be applied twice."""
        if self._closed:
            return
        self._closed = True
        self._seal(changes)
        try:
            if self.producer.flush(10) == 0:
                self._unflushed = 0
                self._kafka_through = self._seq
            else:
                _log.error("final flush of outputs: %d records unacknowledged", len(self.producer))
        except KafkaException as e:
            _log.error("final flush of outputs failed: %s", e)
        if self.sink is not None:
            self.sink.close()
        self._settle(messages=False)
        if self._epochs:
            _log.warning("%d commit intervals not settled at shutdown: their input is read "
                         "again on restart", len(self._epochs))

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.counters.publish_failed += 1
            _log.error("publishing failed: %s", err)
